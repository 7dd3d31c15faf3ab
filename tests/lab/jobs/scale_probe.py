"""Inside the lab VM: the measurements of bench/scale.py (jobs/scale.sh), one JSON line each.

    scale_probe.py floor NS DEV       move every software SA of NS to packet offload on DEV and add
                                      an offloaded twin of each OUT policy, as the agent would, in
                                      one apply() (socket-sized datagrams), no logic; then undo it
    scale_probe.py decided N START    wait until the agent's status has N CHILD_SAs in packet offload;
                                      seconds since START (wall clock, when the agent was started)
    scale_probe.py writes NS SECONDS  count XFRM config notifications in NS for SECONDS (the
                                      agent's kernel writes while it restarts)
    scale_probe.py cpu PID SECONDS    CPU % of one core that PID used over SECONDS, and its RSS
    scale_probe.py dump NS            one state dump of NS, one policy dump, one full list-sas, timed
    scale_probe.py restore NS DEV     take DEV down, then: seconds until every SA charon lists is
                                      in NS's kernel again (60 s at most), and how many are missing then;
                                      seconds until the status file says packet for none of them
    scale_probe.py scrape             one scrape of the agent's metrics, timed
    scale_probe.py event NS NAME      rekey CHILD_SA NAME over NS's VICI; seconds until its
                                      successor's SAs are in packet offload (and in the status file)
No key material is printed.
"""

from __future__ import annotations

import json
import resource
import socket
import struct
import subprocess
import sys
import time
from dataclasses import replace

import vici

from swan_offload import planner as pl
from swan_offload.backend import AddPolicy, AddState, DelPolicy, DelState, NetlinkBackend
from swan_offload.mirror import is_larval
from swan_offload.model import SaList
from swan_offload.vici_source import list_children, list_sas, rekey_child
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o
from swan_offload.xfrm.netlink import SO_RCVBUFFORCE, XfrmSocket, decode_message

STATUS = "/run/so-status.json"
SPI_AT = 16 + 56 + 16  # a NEWSA's SPI: nlmsghdr, xfrm_usersa_info's selector, id.daddr


def out(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def floor(ns: str, dev: str) -> None:
    b = NetlinkBackend(ns)
    local, names = b.devices()
    ifindex = names[dev].ifindex
    t0 = time.monotonic()
    states, policies = b.dump_states(), b.dump_policies()
    moves, undo = [], []
    for s in states:
        inbound = s.daddr in local  # spokes' peers are not 192.0.2.2 (and a device holds one OUT SA per reqid)
        off = o.Offload(ifindex, c.XFRM_OFFLOAD_PACKET | (c.XFRM_OFFLOAD_INBOUND if inbound else 0))
        moved = pl.moved_state(s, off, not inbound, 0)
        moves += [DelState(s.id), AddState(moved)]
        undo += [DelState(s.id), AddState(replace(moved, offload=None))]
    twins = [replace(p, sel=replace(p.sel, user=pl.AGENT_TAG), priority=1000 + i, index=0, curlft=o.LifetimeCur(),
                     templates=tuple(replace(t, spi=0) for t in p.templates), offload=o.Offload(ifindex, c.XFRM_OFFLOAD_PACKET))
             for i, p in enumerate(x for x in policies if x.dir == c.XFRM_POLICY_OUT and x.templates)]
    # the twins first, as the agent does (mover.py): a packet in a swap never meets charon's
    # policy without its SA (that leaves an acquire placeholder holding the SPI)
    errs = b.apply([AddPolicy(p) for p in twins] + moves)
    took = time.monotonic() - t0
    bad = sum(e is not None for e in errs)
    b.apply(undo + [DelPolicy(p.id) for p in twins])
    # a restore's own floor: every SA added back at once, as after a device loss (the kernel
    # flushed them: deleted here first, untimed), from a dump taken after the undo
    again = [s for s in b.dump_states() if not is_larval(s)]
    b.apply([DelState(s.id) for s in again])
    t1 = time.monotonic()
    back = b.apply([AddState(s) for s in again])
    took_back = time.monotonic() - t1
    lost = sum(e is not None for e in back)
    out(floor_s=round(took, 3), floor_ops=len(errs), floor_errors=bad, floor_error_texts=sorted({str(e) for e in errs if e is not None})[:3],
        restore_floor_s=round(took_back, 3), restore_floor_errors=lost, restore_floor_error_texts=sorted({str(e) for e in back if e is not None})[:3])


def decided(n: int, start: float, limit: float = 1800) -> None:
    said = None
    while time.time() - start < limit:
        said = packet_rows()
        if said is not None and said >= n:
            out(seconds=round(time.time() - start, 3))
            return
        time.sleep(0.1)
    out(seconds=None, packet=said)


def writes(ns: str, seconds: float) -> None:
    mon = XfrmSocket(groups=(c.XFRMNLGRP_SA, c.XFRMNLGRP_POLICY), netns=ns)
    kinds = {c.XFRM_MSG_NEWSA, c.XFRM_MSG_DELSA, c.XFRM_MSG_UPDSA, c.XFRM_MSG_NEWPOLICY, c.XFRM_MSG_DELPOLICY, c.XFRM_MSG_UPDPOLICY}
    print("ready", file=sys.stderr, flush=True)
    n, end = 0, time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        n += sum(1 for mtype, _pid, _seq, _raw in mon.events(timeout=left) if mtype in kinds)
    out(writes=n)


def cpu(pid: int, seconds: float) -> None:
    def ticks() -> int:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])

    hz = 100
    a = ticks()
    time.sleep(seconds)
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    out(idle_cpu_pct=round(100.0 * (ticks() - a) / hz / seconds, 1), rss_mb=round(rss / 1024, 1))


def dump(ns: str) -> None:
    """One state dump (dump_s, as before), then one policy dump and one full list-sas: what a
    restart must read at least (read_s: the three, the agent's own readers)."""
    b = NetlinkBackend(ns)
    t0 = time.monotonic()
    n = len(b.dump_states())
    t1 = time.monotonic()
    b.dump_policies()
    t2 = time.monotonic()
    listed = len(list_sas(f"/run/{ns}/charon.vici").children)
    t3 = time.monotonic()
    out(dump_s=round(t1 - t0, 3), states=n, maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        dump_policies_s=round(t2 - t1, 3), listsas_s=round(t3 - t2, 3), listed=listed, read_s=round(t3 - t0, 3))


def restore(ns: str, dev: str, limit: float = 60) -> None:
    """Take DEV down (once this probe has started and read charon: its own start-up is not
    the agent's restore), then: seconds until every SA charon lists is in the kernel again,
    seen on the kernel's NEWSA notifications (the SPI read at its place in the message: a dump
    of 20,000 SAs per poll took 14 s under TCG and competed with the restore it timed). One
    lean dump at the end counts what is missing; the dumps are polled if notifications were
    lost (ENOBUFS)."""
    want = {(ch.spi_in, ch.spi_out) for ch in list_children(f"/run/{ns}/charon.vici") if ch.state == "INSTALLED"}
    spis = {spi for pair in want for spi in pair}
    b = NetlinkBackend(ns)
    mon = XfrmSocket(groups=(c.XFRMNLGRP_SA,), netns=ns)
    # 20,000 NEWSA come in one burst (~8 MB of notifications): past the socket's buffer the
    # kernel drops them (ENOBUFS, seen at 10,000) and the probe is back to polling dumps
    mon.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    subprocess.run(["ip", "link", "set", dev, "down"], check=True)
    start = time.monotonic()
    back: set[int] = set()
    took = None
    overrun = False
    while not overrun and time.monotonic() - start < limit and spis - back:
        for mtype, _pid, _seq, raw in mon.events(timeout=0.5):
            if mtype < 0:
                overrun = True
                break
            if mtype in (c.XFRM_MSG_NEWSA, c.XFRM_MSG_UPDSA) and len(raw) >= SPI_AT + 4:
                back.add(struct.unpack_from(">I", raw, SPI_AT)[0])
            if not spis - back:
                took = time.monotonic() - start
                break
    mon.close()
    while took is None and time.monotonic() - start < limit:  # notifications lost: poll the dumps
        if not spis - {s.spi for s in b.dump_counters()}:
            took = time.monotonic() - start
        else:
            time.sleep(0.05)
    missing = len(spis - {s.spi for s in b.dump_counters()})  # the lean read: no keys decoded
    # with the device down nothing is in packet offload: rows saying packet are a status lag
    lag, said = None, None
    while time.monotonic() - start < limit:
        said = packet_rows()
        if said == 0:
            lag = time.monotonic() - start
            break
        time.sleep(0.1)
    out(restore_s=round(took, 3) if took is not None else None, restore_missing=missing, restore_seen="notifications" if not overrun else "dumps",
        restore_status_s=round(lag, 3) if lag is not None else None, restore_status_packet=said)


def packet_rows() -> int | None:
    """How many CHILD_SAs the status file says are in packet offload (None: unreadable)."""
    try:
        return sum(r["mode"] == "packet" for r in json.load(open(STATUS))["children"])
    except (OSError, ValueError):
        return None


def scrape() -> None:
    import urllib.request

    t0 = time.monotonic()
    with urllib.request.urlopen("http://127.0.0.1:9814/metrics", timeout=60) as r:
        n = len(r.read())
    out(scrape_s=round(time.monotonic() - t0, 3), scrape_bytes=n)


def named(path: str, name: str, ike_id: int | None = None) -> list:  # type: ignore[type-arg]
    """CHILD_SAs called ``name`` (of IKE_SA ``ike_id``): small messages whatever N, where a
    hub's whole listing is more than charon sends."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sas = SaList()
    try:
        for msg in vici.Session(sock).list_sas({"child": name} | ({"ike-id": str(ike_id)} if ike_id else {})):
            sas.add(msg)
    finally:
        sock.close()
    return [x for x in sas.children if x.name == name]


def event(ns: str, name: str) -> None:
    """``event_s``: the rekey asked -> the successor's two SAs in packet offload in the kernel,
    seen on the kernel's own notifications (NEWSA of the CHILD_SA's reqid, an SPI that is not
    the old one's): the probe does not poll charon, whose list-sas walks every IKE_SA, so at
    10,000 the measurement would load what it measures. ``event_status_s``: -> the status
    file shows it, read only after that (megabytes at a hub: reading it competed too)."""
    path = f"/run/{ns}/charon.vici"
    (ch,) = [x for x in named(path, name) if x.state == "INSTALLED"]
    mon = XfrmSocket(groups=(c.XFRMNLGRP_SA,), netns=ns)
    t0 = time.monotonic()
    rekey_child(path, ch.uniqueid)
    kernel_s = status_s = None
    offloaded: set[int] = set()
    while kernel_s is None and (left := 120 - (time.monotonic() - t0)) > 0:
        for mtype, _pid, _seq, raw in mon.events(timeout=left):
            if mtype not in (c.XFRM_MSG_NEWSA, c.XFRM_MSG_UPDSA):
                continue
            st = o.state_from_msg(decode_message(mtype, raw))
            if st.reqid == ch.reqid and st.spi not in (ch.spi_in, ch.spi_out) and st.offload is not None and st.offload.packet:
                offloaded.add(st.spi)
            if len(offloaded) >= 2:  # the successor's inbound and outbound SA
                kernel_s = round(time.monotonic() - t0, 3)
                break
    mon.close()
    while kernel_s is not None and status_s is None and time.monotonic() - t0 < 120:
        try:
            rows = json.load(open(STATUS))["children"]
        except (OSError, ValueError):
            rows = []
        if any(r["child"] == name and r["uniqueid"] != ch.uniqueid and r["mode"] == "packet" for r in rows):
            status_s = round(time.monotonic() - t0, 3)
        time.sleep(0.05)
    out(event_s=kernel_s, event_status_s=status_s)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "floor":
        floor(args[0], args[1])
    elif cmd == "decided":
        decided(int(args[0]), float(args[1]))
    elif cmd == "writes":
        writes(args[0], float(args[1]))
    elif cmd == "cpu":
        cpu(int(args[0]), float(args[1]))
    elif cmd == "dump":
        dump(args[0])
    elif cmd == "restore":
        restore(args[0], args[1])
    elif cmd == "scrape":
        scrape()
    elif cmd == "event":
        event(args[0], args[1])
