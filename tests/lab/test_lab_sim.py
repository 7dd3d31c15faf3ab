"""Issue 4 on the simulated packet-offload NIC (tests/lab/sim): SAs actually in "hardware".

gwa runs charon + swan-offload on swsim0, gwb plain software ESP on its peer end swsim1.
The wire is captured on gwb and decrypted in the VM with cryptography's AESGCM using
the key the kernel reports (tests/lab/jobs/esp_wire.py); keys never reach this output.
"""

from __future__ import annotations

import json
import re

import pytest

from .results import assert_consistent, detail, ip_states, received, section_json

pytestmark = pytest.mark.lab


def _both_tunnels_offloaded(sec: dict, mode: str, why: str) -> tuple[dict, dict[str, str]]:
    """sim_interop.sh: status says `mode` on wan for net and net6, the kernel agrees with charon,
    and iproute2 reads both directions of both tunnels offloaded in `mode` on the sim device.
    Returns the kernel snapshot and the `ip xfrm state` text per SPI."""
    rows = {c["child"]: c for c in section_json(sec, "status")["children"]}
    assert {k: (r["mode"], r["device"]) for k, r in rows.items()} == {"net": (mode, "wan"), "net6": (mode, "wan")}, why
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "kernel", why)
    ip = ip_states(sec["state"])
    for c in kernel["children"]:
        for spi, d in ((c["spi_in"], "in"), (c["spi_out"], "out")):
            assert f"crypto offload parameters: dev wan dir {d} mode {mode}" in ip[spi], ip[spi]
    return kernel, ip


def test_interop_offloaded_tunnels_carry_real_esp(sim_job):
    res, sec = sim_job("sim_interop.sh", timeout=480)
    why = detail(res)
    kernel, ip = _both_tunnels_offloaded(sec, "packet", why)
    for c in kernel["children"]:
        for spi in (c["spi_in"], c["spi_out"]):
            assert "replay-window 0 replay 0 failed 0" in ip[spi], ip[spi]
    # policies: an offloaded OUT twin with the SA's reqid above charon's; charon's in, out and fwd
    # stay in software (an offloaded IN policy would let clear packets in: sim_in_policy.sh)
    reqid = {c["child"]: c["reqid"] for c in kernel["children"]}
    hw = kernel["agent_policies"]
    sw = kernel["charon_policies"]
    for rq in reqid.values():
        mine = [p for p in hw if p["reqids"] == [rq]]
        assert [p["dir"] for p in mine] == ["out"] and all(p["offload"] == "packet" for p in mine), hw
        theirs = [p for p in sw if p["reqids"] == [rq]]
        assert sorted(p["dir"] for p in theirs) == ["fwd", "in", "out"] and all(p["offload"] is None for p in theirs), sw
        assert max(p["priority"] for p in mine) < min(p["priority"] for p in theirs), (mine, theirs)
    bypass = [p for p in hw if not p["reqids"]]
    assert len(bypass) == 8 and all(p["offload"] == "packet" and p["priority"] == 32 for p in bypass), bypass
    _no_loss_no_error(sec, why)
    # counters come from the device: the outbound SA counted the 100 datagrams it encrypted
    out = next(c for c in kernel["children"] if c["child"] == "net")
    counted = {s["spi"]: s["packets"] for s in kernel["states"]}
    assert counted[out["spi_out"]] >= 100, counted
    dev = section_json(sec, "devstats")
    assert dev["ipsec_packet_tx_pkts"] >= 100 and dev["ipsec_crypto_tx_pkts"] == dev["ipsec_crypto_rx_pkts"] == 0, dev
    for block in ip_states(sec["peerstate"]).values():
        assert "replay-window 0 replay 0 failed 0" in block or "replay 0 failed 0" in block, block
    # the wire: every captured frame decrypts with the kernel's key (RFC 4106, independent code),
    # under the expected SPIs; sequence numbers only go up, contiguous but for one forward jump
    # of at most seq_margin (8 here) where the move happened
    wire = section_json(sec, "wire")
    for c in kernel["children"]:
        for spi in (c["spi_in"], c["spi_out"]):
            row = wire[spi]
            assert row["frames"] > 0 and row["decrypted"] == row["frames"], (spi, row)
            seqs = [0] + row["seqs"]  # an SA moved before any traffic starts at seq_margin + 1
            assert seqs == sorted(set(seqs)), (spi, seqs)
            jumps = [b - a for a, b in zip(seqs, seqs[1:]) if b - a != 1]
            assert len(jumps) <= 1 and all(j <= 9 for j in jumps), (spi, jumps)
    sw_phase = wire[out["spi_out"]]["seqs"]
    assert any(b - a > 1 for a, b in zip(sw_phase, sw_phase[1:])), "the outbound SA moved while traffic ran"
    assert "leftover" not in sec["dmesg"], sec["dmesg"]
    assert "<key>" in sec["state"]  # iproute2's output reached us redacted
    nokeys = section_json(sec, "nokeys")
    assert nokeys["keys"] == 4 and nokeys["found_in"] == ["/run/nokeys-control"], nokeys
    # an offloaded OUT policy without SA: the device takes the kernel's larval state, as mlx5
    # does, and charon is asked (a refusal would kill the larval state and drop the packet unasked)
    assert "acquire proto esp" in sec["acquire"], sec["acquire"]
    assert "proto esp spi 0x00000000" in sec["larval"] and "dev wan dir out mode packet" in sec["larval"], sec["larval"]


def _no_loss_no_error(sec: dict, why: str) -> None:
    """Traffic before, during and after the move, none lost; the peer (software) saw no replay or bad ICV."""
    assert received(sec["ping_sw"], 3) and received(sec["ping6"], 3), why
    assert received(sec["pinger"], 150), sec["pinger"]
    assert section_json(sec, "udp") == {"4000": 100}, why
    assert re.search(r"^XfrmInStateSeqError\s+0$", sec["peerstat"], re.M), sec["peerstat"]
    assert re.search(r"^XfrmInStateProtoError\s+0$", sec["peerstat"], re.M), sec["peerstat"]


def test_crypto_offload_the_kernel_frames_esp_the_device_ciphers(sim_job):
    """mode = "crypto" on the sim device (jobs/sim_interop.sh with LAB_SIM_MODE=crypto): the
    kernel builds and strips ESP, keeps the policies, anti-replay and counters; the device
    writes the IV, enciphers and deciphers in place."""
    res, sec = sim_job("sim_interop.sh", timeout=480, env={"LAB_SIM_MODE": "crypto"})
    why = detail(res)
    kernel, _ip = _both_tunnels_offloaded(sec, "crypto", why)
    assert kernel["agent_policies"] == [], kernel["agent_policies"]  # charon's policies serve crypto offload
    _no_loss_no_error(sec, why)
    # the device did the work: its counters both ways, no ICV failure, nothing in packet mode
    dev = section_json(sec, "devstats")
    # after the move the device ciphers the 100 UDP datagrams (one way) and ping6's 3 echoes
    # both ways; the pinger's echoes it ciphers out it deciphers back (how many depends on when
    # the move fell in its 30 s), give or take the echoes in flight while the two SAs moved
    tx, rx = dev["ipsec_crypto_tx_pkts"], dev["ipsec_crypto_rx_pkts"]
    assert tx >= 103 and rx >= 3 and abs(tx - 100 - rx) <= 2, dev
    assert dev["ipsec_packet_tx_pkts"] == dev["ipsec_packet_rx_pkts"] == dev["ipsec_rx_auth_fail"] == 0, dev
    # the wire: every frame decrypts; outbound frames carry the device's IV (the sequence
    # number) from the move on and the kernel's seqiv before it; the peer's frames never do
    wire = section_json(sec, "wire")
    for c in kernel["children"]:
        out, peer = wire[c["spi_out"]], wire[c["spi_in"]]
        assert out["decrypted"] == out["frames"] > 0 and peer["decrypted"] == peer["frames"] > 0, (out, peer)
        seqs = [0] + out["seqs"]
        assert seqs == sorted(set(seqs)), seqs
        moved_at = next(i for i, (a, b) in enumerate(zip(seqs, seqs[1:])) if b - a > 1)
        assert out["seq_iv"] == len(seqs) - 1 - moved_at > 0, (out["seq_iv"], moved_at, len(seqs))
        assert peer["seq_iv"] == 0, peer
    assert "leftover" not in sec["dmesg"], sec["dmesg"]
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


def test_transport_mode_esn_and_ipv6_run_in_the_device(sim_job):
    """jobs/sim_shapes.sh: transport-mode CHILD_SAs between the gateways in packet offload, IPv4
    with ESN and IPv6 with AES-256, UDP both ways; gwb decrypts in software what the device framed
    and the device decrypts what gwb sent; the captured wire decrypts independently (ESN: the high
    sequence bits the device authenticates but never sends)."""
    res, sec = sim_job("sim_shapes.sh", timeout=480)
    why = detail(res)
    rows = {c["child"]: c for c in section_json(sec, "status")["children"]}
    assert {k: (r["mode"], r["device"]) for k, r in rows.items()} == {"trans": ("packet", "wan"), "trans6": ("packet", "wan")}, why
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "kernel", why)
    kids = {c["child"]: c for c in kernel["children"]}
    assert kids["trans"]["mode"] == kids["trans6"]["mode"] == "TRANSPORT" and kids["trans"]["esn"] and not kids["trans6"]["esn"], kids
    ip = ip_states(sec["state"])
    for name, esn, bits in (("trans", True, 160), ("trans6", False, 288)):
        for spi, d in ((kids[name]["spi_in"], "in"), (kids[name]["spi_out"], "out")):
            assert f"crypto offload parameters: dev wan dir {d} mode packet" in ip[spi] and "mode transport" in ip[spi], ip[spi]
            assert ("esn" in ip[spi]) == esn and f"({bits} bits)" in ip[spi], ip[spi]
    for direction, port in (("udp4out", "6000"), ("udp4in", "6001"), ("udp6out", "6000"), ("udp6in", "6001")):
        assert section_json(sec, direction) == {port: 50}, (direction, why)
    dev = section_json(sec, "devstats")
    assert dev["ipsec_packet_tx_pkts"] == dev["ipsec_packet_rx_pkts"] == 100 and dev["ipsec_rx_auth_fail"] == 0, dev
    for stat in ("peerstat", "stat"):
        for counter in ("XfrmInStateSeqError", "XfrmInStateProtoError", "XfrmInNoStates", "XfrmOutPolError"):
            assert re.search(rf"^{counter}\s+0$", sec[stat], re.M), (stat, counter, sec[stat])
    wire = section_json(sec, "wire")
    for c in kids.values():
        for spi in (c["spi_in"], c["spi_out"]):
            assert wire[spi]["frames"] == wire[spi]["decrypted"] == 50, (spi, wire[spi])
            seqs = wire[spi]["seqs"]
            assert seqs == list(range(seqs[0], seqs[0] + 50)), (spi, seqs)
        assert wire[c["spi_out"]]["seq_iv"] == 50 and wire[c["spi_in"]]["seq_iv"] == 0  # the device framed ours, not the peer's
    nokeys = section_json(sec, "nokeys")
    assert nokeys["keys"] == 4 and nokeys["found_in"] == ["/run/nokeys-control"], nokeys


def test_refusals_end_in_fallback_with_the_device_reason(sim_job):
    """Shown 4: an algorithm the device does not take, and a full SA table (jobs/sim_refusals.sh)."""
    res, sec = sim_job("sim_refusals.sh", timeout=480)
    why = detail(res)
    rows = {c["child"]: c for c in section_json(sec, "status")["children"]}
    # aes256-sha256: packet refused, then crypto (fallback "crypto") refused, software it is
    cbc = rows["net"]
    assert cbc["mode"] == "software" and cbc["device"] is None, cbc
    text = "Cannot offload authenticated xfrm states"
    assert cbc["reason"].count(text) == 2 and "crypto offload refused" in cbc["reason"], cbc
    # max_sa=1: the probe passes, the move's second NEWSA hits the full table and is undone
    full = rows["net6"]
    assert full["mode"] == "software" and "Device SA table is full (swsim max_sa)" in full["reason"], full
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "kernel", why)
    assert all(s["offload"] is None for s in kernel["states"]), kernel["states"]
    assert kernel["agent_policies"] == [], kernel["agent_policies"]  # nothing offloaded, no bypass left
    assert_consistent(section_json(sec, "peer"), "peer", why)
    # traffic never stopped: through the agent's start, and after on both tunnels
    assert received(sec["pinger"], 100), sec["pinger"]
    assert received(sec["ping6"], 3), sec["ping6"]
    assert section_json(sec, "udp") == {"4000": 20}, why
    # each refusal is logged once, with the device's words
    warnings = [line for line in sec["log"].splitlines() if line.startswith("WARNING")]
    assert sum(text in w for w in warnings) == 1 and sum("Device SA table is full" in w for w in warnings) == 1, warnings
    assert "leftover" not in sec["dmesg"], sec["dmesg"]
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


def test_native_strongswan_6_side_by_side(sim_job):
    """Shown 6: strongSwan 6.0.1 with native `hw_offload = packet` on the same device
    (jobs/sim_native6.sh); the facts docs/native-6.0.1-comparison.md states are asserted here."""
    res, sec = sim_job("sim_native6.sh", timeout=480)
    why = detail(res)
    assert "6.0.1" in sec["version"], sec["version"]
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "kernel", why)
    ip = ip_states(sec["state"])
    for c in kernel["children"]:
        for spi, d in ((c["spi_in"], "in"), (c["spi_out"], "out")):
            # native: offloaded, and the SA direction attribute set (swan-offload leaves it unset)
            assert f"crypto offload parameters: dev wan dir {d} mode packet" in ip[spi] and f"\tdir {d}\n" in ip[spi], ip[spi]
    pols = kernel["charon_policies"]
    # native: charon's own IPsec policies offloaded in place, at charon's own priorities; FWD in software
    for c in kernel["children"]:
        mine = {p["dir"]: p for p in pols if p["reqids"] == [c["reqid"]]}
        assert set(mine) == {"in", "out", "fwd"}, mine
        assert mine["in"]["offload"] == mine["out"]["offload"] == "packet" and mine["fwd"]["offload"] is None, mine
        assert mine["out"]["priority"] >= 300000, mine  # charon's automatic range, not elevated
    bypass = [p for p in pols if not p["reqids"] and p["offload"] == "packet"]
    assert len(bypass) == 8 and {p["priority"] for p in bypass} == {32}, bypass
    assert kernel["agent_policies"] == [], kernel["agent_policies"]
    assert received(sec["ping"], 3) and received(sec["ping6"], 3) and section_json(sec, "udp") == {"4000": 50}, why
    # charon 6.0.1 reports nothing about offload to the operator: list-sas has no word of it
    assert "ESP:AES_GCM_16-128" in sec["listsas"] and "offload" not in sec["listsas"].lower(), sec["listsas"]
    # swan-offload beside it: every SA reported as native, left alone (nothing added)
    rows = section_json(sec, "agent_status")["children"]
    assert {r["mode"] for r in rows} == {"native"} and len(rows) == 2, rows
    assert section_json(sec, "after")["agent_policies"] == [], why
    assert "charon 6.0.1 can offload packets itself" in sec["log"], sec["log"]
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


SCOPE_TRAFFIC = {  # section: (receiver's port, the inner UDP ports on the wire)
    "from4500": ("7000", "4500>7000"), "from500": ("7001", "500>7001"), "to4500": ("4500", "7002>4500"),
    "to500": ("500", "7003>500"), "from4500v6": ("7004", "4500>7004"), "back4500": ("7005", "4500>7005"),
    "from5501": ("7008", "5501>7008"), "after": ("7006", "4500>7006"),
}


def _bypass_lines(policy_text: str) -> list[str]:
    """The first line (selector) of every UDP policy at priority 32 in `ip xfrm policy`."""
    return [b.splitlines()[0] for b in re.split(r"^(?=src )", policy_text, flags=re.M) if "priority 32 " in b and "proto udp" in b]


def test_ike_bypasses_cover_only_the_gateways_own_ike_traffic(sim_job):
    """Issue 12.1 (jobs/sim_ike_scope.sh): protected hosts' UDP from and to ports 500/4500 goes
    through the tunnel as ESP (was: out of the WAN in clear, 0 of 10 arrived); a clear datagram
    to port 4500 of gateway A's LAN address is dropped (was: delivered); IKE keeps working
    through IKE and CHILD_SA rekeys on charon's custom ports."""
    res, sec = sim_job("sim_ike_scope.sh", timeout=600)
    why = detail(res)
    for name, (port, _inner) in SCOPE_TRAFFIC.items():
        assert section_json(sec, name) == {port: 10}, (name, why)
    # gateway B saw none of it in clear where ESP was due
    assert re.search(r"^XfrmInTmplMismatch\s+0$", sec["peerstat"], re.M), sec["peerstat"]
    # the wire: every one of those datagrams inside ESP, decrypted independently
    inner: dict[str, int] = {}
    for row in section_json(sec, "wire").values():
        assert row["decrypted"] == row["frames"], row
        for ports, n in row.get("udp", {}).items():
            inner[ports] = inner.get(ports, 0) + n
    for name, (_port, ports) in SCOPE_TRAFFIC.items():
        assert inner.get(ports) == 10, (name, ports, inner)
    # each bypass names one of gateway A's IKE addresses and a port: 500/4500 configured, 5501
    # learned from the IKE_SAs (MOBIKE moves them there from 5500 at once: no VICI command names
    # charon's socket ports, so a custom charon.port belongs in ike_ports)
    lines = _bypass_lines(sec["policy"])
    assert len(lines) == 12 and all("192.0.2.1/32" in ln or "2001:db8::1/128" in ln for ln in lines), lines
    for addr in ("192.0.2.1/32", "2001:db8::1/128"):
        for port in (500, 4500, 5501):
            assert sum(addr in ln and f"port {port} " in ln for ln in lines) == 2, (addr, port, lines)
    # IKE through the bypasses: both IKE rekeys and the CHILD_SA rekey done, still offloaded
    assert "ESTABLISHED" in sec["ike"] and "INSTALLED, TUNNEL" in sec["ike"], sec["ike"]
    rows = {c["child"]: c for c in section_json(sec, "status")["children"] if c["mode"] != "pending"}
    assert {k: r["mode"] for k, r in rows.items()} == {"net": "packet", "net6": "packet"}, why
    assert_consistent(section_json(sec, "kernel"), "kernel", why)
    # clear from the wire, the remote subnet to gateway A's LAN address port 4500: dropped by
    # charon's IN policy (the agent offloads no IN policy, which 6.12 would not enforce); the
    # control, a source no policy covers, shows the injected datagrams do reach gateway A
    assert section_json(sec, "clear_lan") == {"4500": 0}, why
    before, after = (int(re.search(r"^XfrmInTmplMismatch\s+(\d+)$", sec[n], re.M)[1]) for n in ("stat_before", "stat"))
    assert after - before == 10, (before, after)
    assert section_json(sec, "clear_control") == {"4500": 10}, why
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


def test_native_6_0_1_bypasses_leak_protected_ike_port_traffic(sim_job):
    """The same traffic with strongSwan 6.0.1's native hw_offload = packet on gateway A: its
    bypasses name charon's socket ports (5500/5501 here) and no address, so a protected host's
    UDP from such a port leaves in clear (recorded in docs/native-6.0.1-comparison.md)."""
    res, sec = sim_job("sim_ike_scope.sh", timeout=600, env={"LAB_SCOPE_NATIVE": "1"})
    why = detail(res)
    got = {name: section_json(sec, name) for name in SCOPE_TRAFFIC}
    assert got["from5501"] == {"7008": 0}, (got, why)  # out of gateway A in clear; gateway B drops it
    assert {k: v for k, v in got.items() if k != "from5501"} == {k: {p: 10} for k, (p, _i) in SCOPE_TRAFFIC.items() if k != "from5501"}, why
    mismatch = int(re.search(r"^XfrmInTmplMismatch\s+(\d+)$", sec["peerstat"], re.M)[1])
    assert mismatch == 10, sec["peerstat"]
    lines = _bypass_lines(sec["policy"])
    assert len(lines) == 8 and all("0.0.0.0/0 dst 0.0.0.0/0" in ln or "::/0 dst ::/0" in ln for ln in lines), lines
    assert {re.search(r"port (\d+)", ln)[1] for ln in lines} == {"5500", "5501"}, lines
    assert section_json(sec, "clear_lan") == {"4500": 10}  # the offloaded IN policy, as in the test below


def test_kernel_6_12_accepts_clear_packets_matching_an_offloaded_in_policy(sim_job):
    """Why the agent offloads no IN policy (jobs/sim_in_policy.sh): a clear datagram from the
    remote subnet to a protected address is dropped by a software IN policy requiring ESP
    (XfrmInTmplMismatch) and accepted once the same policy is packet-offloaded. A ConnectX passes
    such a packet up too (its RX SA table misses to the kernel, ipsec_fs.c rx_create). This test
    pins the kernel's behaviour so a change in it is noticed (tests/lab/README.md)."""
    _res, sec = sim_job("sim_in_policy.sh", timeout=300)
    def mismatches(name: str) -> int:
        return int(re.search(r"^XfrmInTmplMismatch\s+(\d+)$", sec[name], re.M)[1])

    assert section_json(sec, "software") == {"4500": 0} and mismatches("software") == 5, sec
    assert section_json(sec, "packet") == {"4500": 5} and mismatches("packet") == 5, sec
    # swsim takes a cross-family tunnel SA at add time, as mlx5 does: refusing it is the agent's job
    assert sec["cross_family"].split() == ["accepted", "1"], sec["cross_family"]


def test_a_packet_in_a_swap_leaves_a_placeholder_that_the_backend_replaces(sim_job):
    """jobs/sim_placeholder.sh: with charon's OUT policy naming the SPI and the SA gone (a move's
    swap), one packet leaves a larval state holding that SPI; the kernel then answers a NEWSA of
    the SPI with EEXIST (what failed a CI run: the move, its undo and the restore all did, and
    charon's SA was lost). The backend removes the placeholder and adds the SA in its place."""
    _res, sec = sim_job("sim_placeholder.sh", timeout=300)
    got = section_json(sec, "placeholder")
    assert got["read"] and got["after_packet"] == ["larval"], got
    assert got["plain_add"] == "File exists", got
    assert got["backend_add"] == "added" and got["after_add"] == ["sa"] and got["same_key"], got

MATRIX = {  # child: (what it is, the mode it must end in, its cause)
    "tun4": ("tunnel IPv4, AES-GCM-128, ESN", "packet", ""),
    "tun4_256": ("tunnel IPv4, AES-GCM-256", "packet", ""),
    "v6in4": ("tunnel IPv6 in IPv4, AES-GCM-128, ESN", "crypto", "sa_unsupported"),
    "tr4": ("transport IPv4, AES-GCM-128, ESN", "packet", ""),
    "tr4_256": ("transport IPv4, AES-GCM-256", "packet", ""),
    "tun6": ("tunnel IPv6, AES-GCM-128, ESN", "packet", ""),
    "tun6_256": ("tunnel IPv6, AES-GCM-256", "packet", ""),
    "v4in6": ("tunnel IPv4 in IPv6, AES-GCM-128", "crypto", "sa_unsupported"),
    "tr6": ("transport IPv6, AES-GCM-128, ESN", "packet", ""),
    "tr6_256": ("transport IPv6, AES-GCM-256", "packet", ""),
    "natt_tun": ("tunnel IPv4, NAT-T (UDP encapsulation)", "software", "device_refused"),
    "natt_tr": ("transport IPv4, NAT-T (UDP encapsulation)", "software", "device_refused"),
}


def test_every_claimed_shape_carries_traffic_in_the_mode_status_reports(sim_job):
    """Issue 12.2 (jobs/sim_matrix.sh, swanctl/matrix-*.conf): each shape either runs in packet
    offload and carries UDP both ways, or is refused with its reason and carries it in its
    fallback (crypto, then software). Cross-family tunnels were reported packet and dropped every
    outbound packet (XfrmOutBundleGenError). The table goes to docs/offload-shapes.md."""
    res, sec = sim_job("sim_matrix.sh", timeout=900)
    why = detail(res)
    rows = {c["child"]: c for c in section_json(sec, "status")["children"]}
    traffic = {r["child"]: r for r in (json.loads(line) for line in sec["traffic"].splitlines() if line.startswith("{"))}
    ip = ip_states(sec["state"])
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "kernel", why)
    spis = {c["child"]: (c["spi_in"], c["spi_out"]) for c in kernel["children"]}
    table = ["| shape | kernel | mode reached | cause | traffic out / in |", "|---|---|---|---|---|"]
    for name, (what, mode, cause) in MATRIX.items():
        row, t = rows[name], traffic[name]
        table.append(f"| {what} | {sec['release'].strip()} | {row['mode']} | {row['cause'] or '-'} | "
                     f"{sum(t['out'].values())}/20 / {sum(t['in'].values())}/20 |")
        assert (row["mode"], row["cause"]) == (mode, cause), (name, row, why)
        assert sum(t["out"].values()) == 20 and sum(t["in"].values()) == 20, (name, t, why)
        assert (row["reason"] == "") == (mode == "packet"), row
        for spi in spis[name]:
            offload = re.search(r"crypto offload parameters: dev wan dir \w+ mode (\w+)", ip[spi])
            assert (offload[1] if offload else "software") == mode, (name, spi, ip[spi])
    print("\n".join(table))
    for counter in ("XfrmOutBundleGenError", "XfrmOutNoStates", "XfrmInStateSeqError", "XfrmInTmplMismatch"):
        assert re.search(rf"^{counter}\s+0$", sec["stat"], re.M), (counter, sec["stat"])
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


RULES = {  # part: {child: (mode it must end in, the device's words in its reason, or "")}
    "prio": {c: ("crypto", "Device does not support policy priority") for c in
             ("tun4", "tun4_256", "tr4", "tr4_256", "esnwin", "oldwin", "life", "opts", "bigwin")},
    "caps": {"tun4": ("software", "Cannot offload ESN xfrm states"),
             "tun4_256": ("crypto", "Packet offload is not supported for tunnel mode"),
             "tr4": ("software", "Cannot offload ESN xfrm states"), "tr4_256": ("packet", ""),
             "esnwin": ("software", "Cannot offload ESN xfrm states"),
             **{c: ("crypto", "Packet offload is not supported for tunnel mode") for c in ("oldwin", "life", "opts", "bigwin")}},
    # replay_esn windows are checked (ESN, or charon's form of a window over 32), an old-style one
    # never; a soft byte limit equal to the hard one is refused
    "rules": {"esnwin": ("software", "Unsupported replay window size"), "oldwin": ("packet", ""),
              "life": ("software", "Hard byte limit must be greater than soft one"), "opts": ("packet", ""),
              "bigwin": ("software", "Unsupported replay window size")},
}


def test_swsim_refuses_what_mlx5_6_12_refuses_and_fallbacks_carry_traffic(sim_job):
    """Issue 14 (jobs/sim_rules.sh, tests/lab/sim/README.md): each mlx5e_xfrm_validate_state /
    _policy rule met through charon and the agent, with the capabilities a card may lack
    (module parameters, changed at run time): what is refused reaches status with the device's
    words and its fallback carries traffic both ways; what is accepted carries it in packet
    offload. IP options over packet offload are dropped (mlx5e_ipsec_offload_ok). A rekey storm
    ends in packet offload with no refusal (one OUT SA per reqid in the device)."""
    res, sec = sim_job("sim_rules.sh", timeout=900)
    why = detail(res)
    for part, want in RULES.items():
        rows = {c["child"]: c for c in section_json(sec, part)["children"]}
        traffic = {r["child"]: r for r in (json.loads(line) for line in sec[f"{part}_traffic"].splitlines() if line.startswith("{"))}
        for child, (mode, words) in want.items():
            row, t = rows[child], traffic[child]
            assert row["mode"] == mode and words in row["reason"] and (row["reason"] == "") == (mode == "packet"), (part, row, why)
            assert sum(t["out"].values()) == 20 and sum(t["in"].values()) == 20, (part, child, t, why)
    # without the ESN capability the device refuses both modes: its words for each
    tun4 = next(c for c in section_json(sec, "caps")["children"] if c["child"] == "tun4")
    assert tun4["reason"].count("Cannot offload ESN xfrm states") == 2 and "crypto offload refused" in tun4["reason"], tun4
    assert section_json(sec, "options") == {"received": {"5204": 0}, "out_errors": 10}, why
    policy = section_json(sec, "policy")
    assert policy["udp_port"] == "accepted", policy
    assert "Unsupported policy with reqid 0 without at least one of upper protocol or ip addr(s) different than 0" in policy["catch_all"], policy
    # one OUT SA per reqid in the device's TX rules: the second of reqid 77 is refused
    storm = {c["child"]: c for c in section_json(sec, "storm")["children"]}
    assert (storm["oldwin"]["mode"], storm["oldwin"]["reason"]) == ("packet", ""), storm["oldwin"]
    t = json.loads(next(line for line in sec["storm_traffic"].splitlines() if line.startswith("{")))
    assert sum(t["out"].values()) == 20 and sum(t["in"].values()) == 20, (t, why)
    assert "Device failed to offload this state" not in sec["log"] and sec["log"].count("offloaded on arrival") >= 3, why
    # ESP in UDP with the capability: transport mode in packet offload, framed by the device both
    # ways; a NAT-T tunnel is refused in packet and crypto offload (mlx5's words) and goes to software
    natt = {c["child"]: c for c in section_json(sec, "natt")["children"]}
    for c in ("natt_tr", "natt_tr6"):
        assert (natt[c]["mode"], natt[c]["reason"]) == ("packet", ""), natt
    assert natt["natt_tun"]["mode"] == "software" and "Encapsulation is supported in transport mode only" in natt["natt_tun"]["reason"], natt
    assert "Encapsulation is supported in packet offload mode only" in natt["natt_tun"]["reason"], natt
    lines = [json.loads(line) for line in sec["natt_traffic"].splitlines() if line.startswith("{")]
    for t in (lines[0], lines[1], lines[3]):  # natt_tun, natt_tr, natt_tr6
        assert sum(t["out"].values()) == 20 and sum(t["in"].values()) == 20, (t, why)
    for dev in (lines[2], lines[4]):  # the device framed ESP in UDP both ways, IPv4 and IPv6
        assert dev["device_tx"] >= 20 and dev["device_rx"] >= 20, (lines, why)
    tx = [line for line in sec["tx_rule"].splitlines() if line.strip()]
    assert tx[0] == "added" and "Device failed to offload this state" in tx[1] and len(tx) == 2, tx
    assert_consistent(section_json(sec, "kernel"), "kernel", why)
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]


def test_a_device_that_steers_addresses_exactly_never_carries_a_subnet_tunnel(sim_job):
    """Issue 14 (jobs/sim_steering.sh): a ConnectX before 6.15 matches a policy's addresses
    exactly, prefix ignored (swsim steer=612). Shown first without the agent's guard: tun4's
    datagrams miss the device's TX rule and leave in clear (the peer drops them as clear on a
    protected selector). An agent that reads the device's steering sends tun4 to its fallback
    with the reason and keeps the host-to-host transport SA in packet offload; both carry traffic."""
    res, sec = sim_job("sim_steering.sh", timeout=600)
    why = detail(res)
    before = {c["child"]: c["mode"] for c in section_json(sec, "before")["children"]}
    assert before == {"tun4": "packet", "tr4": "packet"}, why
    leak = section_json(sec, "leak")
    assert sum(leak["received"].values()) == 0 and leak["device_missed"] >= 10 and leak["peer_clear_dropped"] >= 10, (leak, why)
    after = {c["child"]: c for c in section_json(sec, "after")["children"]}
    assert after["tr4"]["mode"] == "packet" and after["tr4"]["reason"] == "", after
    tun4 = after["tun4"]
    assert tun4["mode"] == "crypto" and tun4["cause"] == "sa_unsupported", tun4
    assert "device wan matches policy addresses exactly" in tun4["reason"] and "would leave in clear" in tun4["reason"], tun4
    lines = [json.loads(line) for line in sec["after_traffic"].splitlines() if line.startswith("{")]
    for t in lines[:2]:
        assert sum(t["out"].values()) == 20 and sum(t["in"].values()) == 20, (t, why)
    # what the device let out as it was meanwhile: at most a few IPv6 neighbour messages, not 40 datagrams
    assert lines[2]["device_missed"] < 20, (lines, why)
    assert_consistent(section_json(sec, "kernel"), "kernel", why)
    assert section_json(sec, "nokeys")["found_in"] == ["/run/nokeys-control"]
