"""The kernel mirror fed by the real kernel's notifications equals a dump (host kernel,
private netns: policies; states need ESP, which only the lab kernel has)."""

from __future__ import annotations

import errno
import ipaddress
import queue
import random
import socket
import struct
from dataclasses import replace

import pytest
from factories import charon_objects, child

from swan_offload import mirror as mi
from swan_offload import planner as pl
from swan_offload.backend import AddPolicy, DelPolicy, NetlinkBackend
from swan_offload.monitor import XfrmMonitor
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import messages as msgs
from swan_offload.xfrm import objects as o
from swan_offload.xfrm.netlink import Request, open_netlink, walk_messages

pytestmark = pytest.mark.netns


def drain(mon: XfrmMonitor, m: mi.KernelMirror) -> None:
    assert mon.barrier()
    while mon.inbox:
        x = mon.inbox.popleft()
        m.apply(x) if isinstance(x, mi.Change) else m.invalidate(x)


def content(policies, index: bool = True) -> dict:
    return {pl.policy_key(p): (pl.policy_content(p), p.index if index else None) for p in policies}


@pytest.mark.parametrize("echoes", ["decoded", "written"])
def test_mirror_follows_every_writer_and_equals_the_dump(netns, echoes):
    """charon's writes and the agent's own (both sockets), adds, updates and deletes in a random
    order, 600 policies: after a barrier the mirror holds exactly what a dump returns. With
    ``written`` the agent's own echoes are made from what it wrote, not decoded: the same
    content (the kernel's policy index, which the agent never reads of its own, aside)."""
    agent, charon = NetlinkBackend(netns), NetlinkBackend(netns)
    q: queue.Queue = queue.Queue()
    mon = XfrmMonitor(q, agent.sock.port, netns, written=agent.sock.written if echoes == "written" else None)
    mon.start()
    m = mi.KernelMirror()
    try:
        drain(mon, m)
        m.load([], agent.dump_policies())
        rng = random.Random(7)
        present: dict = {}
        for i in range(600):
            ch = child(uniqueid=i, reqid=i + 1, lts=(f"10.{1 + i // 250}.{i % 250}.0/24",), rts=(f"10.200.{i % 250}.0/24",))
            _states, pols = charon_objects(ch)
            for p in pols:
                (charon if rng.random() < 0.5 else agent).apply([AddPolicy(p)])
                present[pl.policy_key(p)] = p
            if present and rng.random() < 0.3:  # someone deletes one
                k = rng.choice(list(present))
                assert charon.apply([DelPolicy(present.pop(k).id)]) == [None]
            if present and rng.random() < 0.3:  # charon updates one (a rekey's new template SPI)
                k = rng.choice(list(present))
                p = present[k]
                new = replace(p, templates=tuple(replace(t, spi=t.spi + 1) for t in p.templates))
                assert charon.apply([AddPolicy(new, update=True)]) == [None]
                present[k] = new
        drain(mon, m)
        assert m.valid
        dump = agent.dump_policies()
        assert len(dump) == len(present) > 1000
        assert content(m.policies.values(), echoes == "decoded") == content(dump, echoes == "decoded")
        if echoes == "written":
            # every accepted write of the agent was taken undecoded, and none is left waiting
            assert mon.echoes > 500 and len(agent.sock.written) == 0
            # a refused write sends no echo: it is not kept waiting for one
            (err,) = agent.apply([AddPolicy(next(iter(present.values())))])
            assert err is not None and err.errno == errno.EEXIST and len(agent.sock.written) == 0
        assert m.load([], dump) == {}  # a reload finds nothing wrong
        # the index answers from the kept objects as from the dump
        for p in dump[:50]:
            if p.dir == c.XFRM_POLICY_OUT:
                r = p.templates[0].reqid
                assert [pl.policy_key(x) for x in m.index.charon(r)] == [pl.policy_key(x) for x in pl.KernelView.build([], dump).index.charon(r)]
        # a flush: the mirror cannot know what went, it says so
        charon.sock.request(Request(c.XFRM_MSG_FLUSHPOLICY, msgs.xfrm_userpolicy_flush_msg(), what="flush"))
        drain(mon, m)
        assert not m.valid and "flushed" in m.why
    finally:
        mon.stop()
        mon.join(3)
        agent.close()
        charon.close()


def test_others_changes_wake_the_daemon_with_their_reqids(netns):
    agent, charon = NetlinkBackend(netns), NetlinkBackend(netns)
    q: queue.Queue = queue.Queue()
    mon = XfrmMonitor(q, agent.sock.port, netns)
    mon.start()
    try:
        _s, pols = charon_objects(child(reqid=42))
        assert agent.apply([AddPolicy(p) for p in pols]) == [None] * len(pols)
        assert mon.barrier() and q.empty()  # the agent's own: into the mirror, no wake-up
        assert len(mon.inbox) == len(pols)
        assert charon.apply([DelPolicy(pols[0].id)]) == [None]
        assert q.get(timeout=2) == ("xfrm", frozenset({42}))
        bypass = o.XfrmPolicy(o.Selector(socket.AF_INET, "0.0.0.0", "192.0.2.1", 0, 32, proto=c.IPPROTO_UDP), c.XFRM_POLICY_OUT, 32)
        assert charon.apply([AddPolicy(bypass)]) == [None]
        assert q.get(timeout=2) == ("xfrm", None)  # nothing locates it: a full resync
    finally:
        mon.stop()
        mon.join(3)
        agent.close()
        charon.close()


def test_an_inbox_past_its_cap_is_dropped_for_one_reload(netns):
    """Nobody reads the inbox (a long resync) while 300 policies change: past its cap it holds
    only the reason, later notifications are not decoded, the mirror fed from it knows it
    missed changes, and a reload makes it the dump."""
    agent, charon = NetlinkBackend(netns), NetlinkBackend(netns)
    q: queue.Queue = queue.Queue()
    mon = XfrmMonitor(q, agent.sock.port, netns, inbox_max=50)
    mon.start()
    m = mi.KernelMirror()
    try:
        drain(mon, m)
        m.load([], agent.dump_policies())
        for i in range(300):
            ch = child(uniqueid=i, reqid=i + 1, lts=(f"10.1.{i}.0/24",) if i < 250 else (f"10.3.{i - 250}.0/24",))
            assert charon.apply([AddPolicy(p) for p in charon_objects(ch)[1]]) == [None] * 3
        assert mon.barrier()
        # past the cap nothing more is decoded: the reload's dump comes after all of it
        assert list(mon.inbox) == ["more than 50 kernel changes waited to be read"] and ("xfrm", None) in list(q.queue)
        drain(mon, m)
        assert not m.valid and "more than 50 kernel changes" in (m.why or "")
        m.load([], agent.dump_policies())
        assert m.valid and content(m.policies.values()) == content(agent.dump_policies())
        assert len(m.policies) == 900
    finally:
        mon.stop()
        mon.join(3)
        agent.close()
        charon.close()


def allocate_spi(netns: str, daddr: str, saddr: str, reqid: int) -> int:
    """What charon does before it installs an inbound SA: XFRM_MSG_ALLOCSPI (struct
    xfrm_userspi_info: an xfrm_usersa_info, then min and max), answered to it alone."""
    sock = open_netlink(c.NETLINK_XFRM, netns)
    try:
        sock.bind((0, 0))
        ident = ipaddress.ip_address(daddr).packed.ljust(16, b"\0") + struct.pack(">I", 0) + bytes([c.IPPROTO_ESP, 0, 0, 0])
        info = bytes(56) + ident + ipaddress.ip_address(saddr).packed.ljust(16, b"\0") + bytes(64 + 32 + 12)
        info += struct.pack("=IIHBBB7x", 0, reqid, socket.AF_INET, c.XFRM_MODE_TUNNEL, 0, 0)
        body = info + struct.pack("=II", 0xC0000000, 0xCFFFFFFF)
        sock.send(struct.pack("=IHHII", 16 + len(body), c.XFRM_MSG_ALLOCSPI, 1, 1, 0) + body)
        ((mtype, _f, _s, _p, chunk),) = list(walk_messages(sock.recv(65536)))
        assert mtype == c.XFRM_MSG_NEWSA, mtype  # the larval state, to charon only
        return int(struct.unpack_from(">I", chunk, 16 + 56 + 16)[0])
    finally:
        sock.close()


def test_an_allocated_spi_is_no_drift_and_a_real_one_is_named(netns):
    """Mid-negotiation the kernel holds charon's allocated SPIs: a dump shows them, no
    notification ever did (lab: a reload during a charon restart counted them as drift 2).
    They are not SAs: the mirror leaves them out and a reload finds nothing wrong. A real
    difference is reported by identity and kind."""
    agent, charon = NetlinkBackend(netns), NetlinkBackend(netns)
    q: queue.Queue = queue.Queue()
    mon = XfrmMonitor(q, agent.sock.port, netns, written=agent.sock.written)
    mon.start()
    m = mi.KernelMirror()
    try:
        drain(mon, m)
        m.load(agent.dump_states(), agent.dump_policies())
        _s, pols = charon_objects(child(reqid=9))
        assert charon.apply([AddPolicy(p) for p in pols]) == [None] * len(pols)
        spis = [allocate_spi(netns, "192.0.2.1", "192.0.2.2", 9) for _ in range(2)]
        drain(mon, m)
        assert m.valid and not mon.inbox and len(m.policies) == len(pols)
        dump = agent.dump_states()
        assert sorted(s.spi for s in dump) == sorted(spis) and all(mi.is_larval(s) for s in dump)
        assert m.load(dump, agent.dump_policies()) == {}
        assert m.states == {}
        # a policy the mirror lost and one it invented: each named, never a key in sight
        lost, invented = pols[0], replace(pols[1], sel=replace(pols[1].sel, daddr="10.9.9.0"))
        m.drop_policy(lost)
        m.put_policy(invented)
        wrong = m.load(dump, agent.dump_policies())
        assert wrong == {("policy", pl.policy_key(lost)): "missing", ("policy", pl.policy_key(invented)): "extra"}
        text = mi.describe("policy", pl.policy_key(invented))
        assert "10.9.9.0/" in text and f"dir {invented.dir}" in text
        assert mi.describe("state", ("192.0.2.1", spis[0], c.IPPROTO_ESP)) == f"state 192.0.2.1 spi 0x{spis[0]:08x} proto 50"
    finally:
        mon.stop()
        mon.join(3)
        agent.close()
        charon.close()
