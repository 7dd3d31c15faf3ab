"""The netlink backend against this machine's real kernel, in a private network namespace.

States need ESP, which this host kernel lacks: state installs are proven in the lab
(tests/lab); here the kernel's refusal of them must reach the caller as its text.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import replace

import pytest

from swan_offload import capability, planner
from swan_offload.backend import AddPolicy, AddState, DelPolicy, NetlinkBackend
from swan_offload.planner import AGENT_TAG
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

pytestmark = pytest.mark.netns

SEL = o.Selector(socket.AF_INET, "10.2.0.0", "10.1.0.0", 24, 24)
TMPL = o.Template("192.0.2.2", 0, c.IPPROTO_ESP, socket.AF_INET, "192.0.2.1", 7, c.XFRM_MODE_TUNNEL)


@pytest.fixture
def backend(netns):
    b = NetlinkBackend(netns)
    yield b
    b.close()


def ip_xfrm_policy(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "xfrm", "policy"], check=True, capture_output=True, text=True).stdout


def test_policy_install_dump_remove(backend, netns):
    sw = o.XfrmPolicy(SEL, c.XFRM_POLICY_OUT, 375423, templates=(TMPL,))
    tagged = sw.evolve(sel=replace(SEL, user=AGENT_TAG), priority=55712)
    fwd = sw.evolve(dir=c.XFRM_POLICY_FWD)
    assert backend.apply([AddPolicy(sw), AddPolicy(tagged), AddPolicy(fwd)]) == [None, None, None]
    got = {(p.dir, p.priority, p.sel.user): p for p in backend.dump_policies()}
    assert set(got) == {(1, 375423, 0), (1, 55712, AGENT_TAG), (2, 375423, 0)}
    assert got[(1, 55712, AGENT_TAG)].templates == (TMPL,)
    # iproute2 reads the same objects independently
    text = ip_xfrm_policy(netns)
    assert "priority 55712" in text and "reqid 7" in text and "dir fwd" in text
    # same selector without the tag is the same kernel identity: EEXIST
    err = backend.apply([AddPolicy(sw)])[0]
    assert err is not None and err.errno == 17
    assert backend.apply([DelPolicy(tagged.id)]) == [None]
    assert {p.sel.user for p in backend.dump_policies()} == {0}


def test_policy_update_replaces_template_in_place(backend, netns):
    """A rekey's new SPI reaches the offloaded twin by UPDPOLICY; what the kernel dumps back
    compares equal to what was sent, so the reconciler sees no drift on the next run."""
    tagged = o.XfrmPolicy(replace(SEL, user=AGENT_TAG), c.XFRM_POLICY_OUT, 55712, templates=(replace(TMPL, spi=0xC1000001),))
    assert backend.apply([AddPolicy(tagged)]) == [None]
    newer = tagged.evolve(templates=(replace(TMPL, spi=0xC1000002),))
    assert backend.apply([AddPolicy(newer)])[0].errno == 17  # NEWPOLICY refuses the same identity
    assert backend.apply([AddPolicy(newer, update=True)]) == [None]
    (got,) = backend.dump_policies()
    assert planner.policy_content(got) == planner.policy_content(newer)
    assert "spi 0xc1000002" in ip_xfrm_policy(netns)


def test_batch_reports_each_result_in_order(backend):
    ok = o.XfrmPolicy(SEL, c.XFRM_POLICY_IN, 100, templates=(TMPL,))
    bad = ok.evolve(sel=o.Selector(socket.AF_INET, "10.2.0.0", "10.1.0.0", 64, 24))
    errs = backend.apply([AddPolicy(ok), AddPolicy(bad), DelPolicy(ok.id)])
    assert errs[0] is None and errs[2] is None
    assert errs[1] is not None and errs[1].errno == 22
    # the kernel's extended-ack text reaches the caller, naming the request without keys
    assert errs[1].ext_ack and "prefix" in errs[1].ext_ack.lower()
    assert "add policy" in str(errs[1])


def test_state_refusal_carries_kernel_text(backend):
    st = o.XfrmState(
        SEL, "192.0.2.2", 0xC0000001, c.IPPROTO_ESP, "192.0.2.1", socket.AF_INET, c.XFRM_MODE_TUNNEL, 7,
        aead=o.Algo("rfc4106(gcm(aes))", o.Secret(b"\x11" * 20), 160, icv_len=128),
    )
    err = backend.apply([AddState(st)])[0]
    if err is None:
        pytest.skip("this kernel has ESP with GCM: the refusal path is exercised in the lab")
    assert err.ext_ack, f"kernel gave no text: {err}"
    assert "11" * 20 not in str(err) and "11" * 20 not in repr(err)


def test_capability_probe_agrees_with_kernel(backend):
    caps = capability.probe(backend)
    # ask the kernel directly, independently of the probe
    pol = o.XfrmPolicy(SEL, c.XFRM_POLICY_OUT, 5, templates=(TMPL,), offload=o.Offload(1, c.XFRM_OFFLOAD_PACKET))
    err = backend.apply([AddPolicy(pol)])[0]
    if err is None:
        stored = [p for p in backend.dump_policies() if p.sel == SEL]
        assert caps.packet_offload == (stored[0].offload is not None)
    else:
        assert caps.packet_offload and err.ext_ack == "Policy offload is not supported"
    # the probe left nothing behind
    assert not [p for p in backend.dump_policies() if p.sel == capability.PROBE_SEL]
    assert caps.reason


def test_old_kernel_release_is_refused_without_asking(backend):
    caps = capability.probe(backend, release="6.1.0-28-amd64")
    assert not caps.packet_offload and "older than 6.2" in caps.reason


def test_devices_map_addresses(backend, netns):
    subprocess.run(["ip", "-n", netns, "addr", "add", "192.0.2.1/24", "dev", "lo"], check=True)
    addrs, names = backend.devices()
    assert addrs["192.0.2.1"].name == "lo" and names["lo"].ifindex == 1


def test_a_batch_larger_than_one_datagram_is_applied_whole_with_one_result_each(backend, netns):
    """A restore or promotion at hub scale: thousands of requests in one apply(). One datagram
    over the socket's send buffer is refused whole (EMSGSIZE, issue 13: a device flap at 300
    CHILD_SAs lost every SA); the batch leaves in chunks, each one's acks read before the next."""
    sndbuf = backend.sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    pols = [
        o.XfrmPolicy(o.Selector(socket.AF_INET, f"10.{200 + i // 250}.{i % 250}.0", "10.1.0.0", 24, 24), c.XFRM_POLICY_OUT,
                     1000 + i, templates=(replace(TMPL, reqid=1 + i),))
        for i in range(3000)
    ]
    msgs = [o.policy_to_msg(p) for p in pols]
    for msg in msgs:
        msg.encode()
    wire = sum(len(msg.data) for msg in msgs)
    assert wire > 2 * sndbuf, (wire, sndbuf)  # one datagram could never carry it
    assert backend.apply([AddPolicy(p) for p in pols]) == [None] * len(pols)
    assert len(backend.dump_policies()) == len(pols)
    # partial failure, per request: every second one exists already
    again = [AddPolicy(p) for p in pols[::2]] + [DelPolicy(p.id) for p in pols[1::2]]
    errs = backend.apply(again)
    assert [e.errno if e else None for e in errs] == [17] * 1500 + [None] * 1500
    assert all(e.what.startswith("add policy") for e in errs[:1500] if e)
    assert len(backend.dump_policies()) == 1500


def test_receive_buffer_is_forced_past_rmem_max(backend):
    """CAP_NET_ADMIN lets the agent raise its buffer past net.core.rmem_max (SO_RCVBUFFORCE):
    a rekey storm's notifications and a big batch's acks wait there. A plain SO_RCVBUF of the
    same size is capped at rmem_max (the kernel reports twice what it grants)."""
    rmem_max = int(open("/proc/sys/net/core/rmem_max").read())
    plain = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, c.NETLINK_XFRM)
    plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, backend.sock.RCVBUF)
    capped = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    plain.close()
    assert backend.sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * backend.sock.RCVBUF
    assert capped == 2 * min(rmem_max, backend.sock.RCVBUF)
