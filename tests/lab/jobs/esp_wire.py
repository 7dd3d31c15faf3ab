"""Inside the lab VM: capture ESP on a gateway's wire and decrypt it with `cryptography`.

    esp_wire.py capture IFACE OUT     (in the netns: ip netns exec NS ...) until SIGTERM
    esp_wire.py decrypt NS OUT [KEYS] keys read from NS's kernel over netlink, never printed,
                                      plus those saved earlier to KEYS (SAs since rekeyed away)
    esp_wire.py keys NS KEYS          save NS's current keys to KEYS (mode 0600, never printed)

The decryption is independent of the kernel and of swsim: AES-GCM per RFC 4106 with
the key and salt the kernel reports, nonce = salt || explicit IV, AAD = SPI || seq.
It prints, per SPI, how many frames decrypted, the sequence numbers seen and the inner UDP
ports ("udp": {"SPORT>DPORT": frames}), as JSON.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003


def capture(iface: str, out: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(out, "w", buffering=1) as f:
        print("ready", file=sys.stderr, flush=True)
        while True:
            frame, addr = s.recvfrom(65535)
            if esp_of(frame) is not None:
                f.write(f"{addr[2]} {frame.hex()}\n")  # addr[2]: packet type (4 = outgoing)


def esp_of(frame: bytes) -> bytes | None:
    """The ESP part of an Ethernet frame (no UDP encapsulation in the lab), or None."""
    etype = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if etype == 0x0800 and len(ip) >= 20 and ip[9] == 50:
        total = struct.unpack_from("!H", ip, 2)[0]
        return ip[(ip[0] & 15) * 4 : total]
    if etype == 0x86DD and len(ip) >= 40 and ip[6] == 50:
        return ip[40 : 40 + struct.unpack_from("!H", ip, 4)[0]]
    return None


def current_keys(ns: str) -> tuple[dict[int, bytes], dict[int, int | None]]:
    """Keys by SPI, and each SA's ESN high 32 bits (None without ESN): the sender puts only the
    low bits on the wire, but both ends authenticate SPI || seq_hi || seq_lo (RFC 4106 5)."""
    from swan_offload.backend import NetlinkBackend

    states = NetlinkBackend(ns).dump_states()
    keys = {s.spi: s.aead.key.reveal() for s in states if s.aead is not None}
    hi = {s.spi: max(s.replay_esn.oseq_hi, s.replay_esn.seq_hi) if s.replay_esn is not None and s.flags & 128 else None for s in states}
    return keys, hi


def save_keys(ns: str, path: str) -> None:
    import os

    keys, esn = current_keys(ns)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({str(spi): [k.hex(), esn[spi]] for spi, k in keys.items()}, f)


def decrypt(ns: str, path: str, saved: str | None = None) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys, esn = current_keys(ns)
    if saved:
        for spi, (k, e) in json.load(open(saved)).items():
            keys.setdefault(int(spi), bytes.fromhex(k))
            esn.setdefault(int(spi), e)
    out: dict[str, dict] = {}
    for line in open(path):
        _ptype, hexframe = line.split()
        esp = esp_of(bytes.fromhex(hexframe))
        spi, seq = struct.unpack_from("!II", esp)
        row = out.setdefault(f"{spi:08x}", {"frames": 0, "decrypted": 0, "seqs": [], "seq_iv": 0})
        row["frames"] += 1
        row["seqs"].append(seq)
        # swsim writes the sequence number as the IV; the kernel's seqiv XORs it with a
        # random salt: an IV equal to the sequence number says the device enciphered the frame
        row["seq_iv"] += esp[8:16] == struct.pack("!Q", seq)
        key = keys.get(spi)
        if key is None:
            continue  # not a current SA of NS
        iv, body = esp[8:16], esp[16:]
        # the lab's SAs never wrap 2^32 packets: the high bits now are those of every frame
        aad = esp[:8] if esn.get(spi) is None else esp[:4] + struct.pack("!I", esn[spi]) + esp[4:8]
        try:
            plain = AESGCM(key[:-4]).decrypt(key[-4:] + iv, body, aad)
        except Exception:
            continue
        row["decrypted"] += 1
        ports = udp_ports(plain)
        if ports:
            row.setdefault("udp", {})
            row["udp"][ports] = row["udp"].get(ports, 0) + 1
    print(json.dumps(out))


def udp_ports(plain: bytes) -> str | None:
    """'SPORT>DPORT' of the UDP datagram an ESP payload carries (tunnel or transport), or None."""
    if len(plain) < 2:
        return None
    pad, nexthdr = plain[-2], plain[-1]
    inner = plain[: len(plain) - 2 - pad]
    if nexthdr == 4 and len(inner) >= 20 and inner[9] == 17:  # IPv4 in the tunnel
        inner, nexthdr = inner[(inner[0] & 15) * 4 :], 17
    elif nexthdr == 41 and len(inner) >= 40 and inner[6] == 17:  # IPv6 in the tunnel
        inner, nexthdr = inner[40:], 17
    if nexthdr != 17 or len(inner) < 4:
        return None
    sport, dport = struct.unpack_from("!HH", inner)
    return f"{sport}>{dport}"


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "keys":
        save_keys(sys.argv[2], sys.argv[3])
    else:
        decrypt(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
