"""Inside the lab VM: a UDP stream between the protected subnets (stdlib only).

    udp.py recv PORTS EXPECT SECONDS [TIMES]
                                            print {"port": datagrams received} as JSON once
                                            every port has EXPECT, or after SECONDS; with TIMES,
                                            also write each arrival there as [port, index, boottime]
    udp.py send DST PORTS COUNT GAP [SPORT]
                                            COUNT datagrams to every port, GAP seconds apart
                                            (from SPORT if given); DST IPv4 or IPv6
    udp.py options DST PORT COUNT            COUNT IPv4 datagrams carrying IP options (four bytes:
                                            NOP NOP NOP EOL, so the header is 24 bytes long)
    udp.py clear SRC DST PORT COUNT         COUNT datagrams from SRC (an address of this host)
                                            to DST:PORT in clear, past this host's own IPsec
                                            policies (a per-socket bypass, as charon's IKE
                                            sockets have): what an attacker on the wire sends
PORTS is PORT[-LAST][,...] ("5001-5010" or "5001,5101,5201"). Receivers listen on IPv4 and
IPv6 (one dual-stack socket per port).
"""

import json
import select
import socket
import struct
import sys
import time


def ports(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def recv(spec: str, expect: int, seconds: float, times: str | None = None) -> None:
    socks = {}
    for p in ports(spec):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", p))
        socks[s] = p
    got = {p: 0 for p in socks.values()}
    arrivals = []
    print("ready", file=sys.stderr, flush=True)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and min(got.values()) < expect:
        for s in select.select(list(socks), [], [], left)[0]:
            data = s.recv(2048)
            got[socks[s]] += 1
            if times:
                arrivals.append([socks[s], int(data.split()[-1]), time.clock_gettime(time.CLOCK_BOOTTIME)])
    if times:
        with open(times, "w") as f:
            json.dump(arrivals, f)
    print(json.dumps(got))


def send(dst: str, spec: str, count: int, gap: float, sport: int = 0) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    if sport:
        s.bind(("::" if ":" in dst else "0.0.0.0", sport))
    for i in range(count):
        for p in ports(spec):
            s.sendto(f"lab {i}".encode(), (dst, p))
        time.sleep(gap)


def socket_bypass(s: socket.socket, v6: bool) -> None:
    """IP(V6)_XFRM_POLICY with an allow policy for dir out: struct xfrm_userpolicy_info
    (selector 56, lifetime cfg 64, current 32, priority, index, dir, action, flags, share, pad)."""
    inf = 0xFFFFFFFFFFFFFFFF
    # the selector matches nothing but must name a family (verify_newpolicy_info)
    sel = bytes(40) + struct.pack("=H", socket.AF_INET6 if v6 else socket.AF_INET) + bytes(14)
    info = sel + struct.pack("=4Q4Q", inf, inf, inf, inf, 0, 0, 0, 0) + bytes(32)
    info += struct.pack("=IIBBBB4x", 0, 0, 1, 0, 0, 0)  # XFRM_POLICY_OUT, XFRM_POLICY_ALLOW
    assert len(info) == 168
    s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, 35 if v6 else 17, info)


def clear(src: str, dst: str, port: int, count: int) -> None:
    v6 = ":" in dst
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    socket_bypass(s, v6)
    s.bind((src, 0))
    for i in range(count):
        s.sendto(f"lab {i}".encode(), (dst, port))
        time.sleep(0.05)


def options(dst: str, port: int, count: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 1, 1, 0]))
    for i in range(count):
        s.sendto(f"lab {i}".encode(), (dst, port))
        time.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1] == "options":
        options(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "clear":
        clear(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "recv":
        recv(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]) if len(sys.argv) > 6 else 0)
