"""The pure planner over a table of CHILD_SAs."""

from __future__ import annotations

import dataclasses

import pytest
from factories import ETH, charon_objects, child, view_for

from swan_offload import config
from swan_offload import planner as pl
from swan_offload.model import IkeSA
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

CFG = config.Config()


def plan_one(ch, cfg=CFG, **kw):
    view = view_for([ch], **kw)
    return pl.plan([ch], cfg, view), view


CASES = {
    "ipv4 tunnel": child(),
    "ipv6 tunnel": child(local="2001:db8::1", remote="2001:db8::2", lts=("fd00:1::/64",), rts=("fd00:2::/64",)),
    "several selectors": child(lts=("10.1.0.0/24", "10.3.0.0/16"), rts=("10.2.0.0/24", "10.4.0.5/32")),
    "transport": child(mode="TRANSPORT", lts=("192.0.2.1/32",), rts=("192.0.2.2/32",)),
    "nat-t": child(encap=True),
    "esn": child(esn=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_packet_plan_for_each_kind(name):
    ch = CASES[name]
    kw = {"esn": ch.esn, "encap": ch.encap}
    p, view = plan_one(ch, **kw)
    (cp,) = p.children
    assert cp.target == pl.PACKET and cp.device == ETH and cp.reason == "" and cp.cause == ""
    n = len(ch.local_ts) * len(ch.remote_ts)
    assert len(cp.policies) == n  # out only: in and fwd stay charon's, in software
    for hw in cp.policies:
        assert hw.dir == c.XFRM_POLICY_OUT
        assert hw.offload == o.Offload(ETH.ifindex, c.XFRM_OFFLOAD_PACKET)
        assert [t.reqid for t in hw.templates] == [ch.reqid]
        assert hw.sel.user == pl.AGENT_TAG
        # below every software policy charon installed
        assert hw.priority < min(x.priority for x in view.policies)
    # state moves: out packet, in packet|inbound, same SPIs, keys untouched
    changes = pl.state_changes(cp, CFG.seq_margin)
    flags = {new.spi: new.offload.flags for _cur, new in changes}
    assert flags == {ch.spi_out: c.XFRM_OFFLOAD_PACKET, ch.spi_in: c.XFRM_OFFLOAD_PACKET | c.XFRM_OFFLOAD_INBOUND}
    for cur, new in changes:
        assert new.aead == cur.aead and new.reqid == cur.reqid and new.encap == cur.encap
        assert new.curlft == cur.curlft  # counters and add_time carried: lifetimes keep counting


def test_relative_order_of_charon_priorities_is_kept():
    ch = child(lts=("10.1.0.0/16", "10.1.2.0/24"), rts=("10.2.0.0/24", "10.2.0.7/32"))
    p, view = plan_one(ch)
    sw = {(x.sel, x.dir): x.priority for x in view.policies if x.dir == c.XFRM_POLICY_OUT}
    hw = {(dataclasses.replace(x.sel, user=0), x.dir): x.priority for x in p.children[0].policies}
    assert set(hw) == set(sw) and len(sw) == 4  # a twin for each OUT policy, none for in or fwd
    keys = list(sw)
    for a in keys:
        for b in keys:
            if sw[a] < sw[b]:
                assert hw[a] < hw[b]


def test_outbound_sequence_jumps_ahead_inbound_window_kept():
    p, _ = plan_one(child())
    changes = {new.spi: (cur, new) for cur, new in pl.state_changes(p.children[0], 1000)}
    cur, new = changes[0xC1000001]
    assert new.replay.oseq == cur.replay.oseq + 1000
    cur, new = changes[0xC0000001]
    assert new.replay == cur.replay


def test_esn_sequence_carries_into_high_bits():
    p, _ = plan_one(child(esn=True), esn=True)
    cur, new = next((cu, n) for cu, n in pl.state_changes(p.children[0], 0x100) if n.spi == 0xC1000001)
    assert (new.replay_esn.oseq_hi, new.replay_esn.oseq) == (1, 0xF0)


def test_marks_and_if_id_follow_into_hw_policies():
    ch = child()
    p, _ = plan_one(ch, mark=o.Mark(0x2A, 0xFF), if_id=7)
    for hw in p.children[0].policies:
        assert hw.mark == o.Mark(0x2A, 0xFF) and hw.if_id == 7


def test_reqid_zero_goes_to_fallback():
    p, _ = plan_one(child(reqid=0))
    cp = p.children[0]
    assert cp.target == pl.CRYPTO and "reqid 0" in cp.reason and not cp.policies and cp.cause == pl.REQID


def test_static_reqid_shared_by_different_selectors_is_refused():
    a = child(name="a", uniqueid=1, reqid=5)
    b = child(name="b", uniqueid=2, reqid=5, spi_in=0xC0000002, spi_out=0xC1000002, rts=("10.9.0.0/24",))
    view = view_for([a, b])
    p = pl.plan([a, b], CFG, view)
    for cp in p.children:
        assert cp.target != pl.PACKET and "reqid 5 is shared" in cp.reason and "gw/a" in cp.reason and cp.cause == pl.REQID
    # same selectors (a rekey, or a duplicate) may share a reqid
    b2 = dataclasses.replace(b, remote_ts=a.remote_ts)
    assert all(cp.target == pl.PACKET for cp in pl.plan([a, b2], CFG, view_for([a, b2])).children)


def test_kernel_without_packet_offload_uses_fallback_with_reason():
    ch = child()
    view = view_for([ch])
    view.packet_offload, view.packet_offload_reason = False, "kernel 6.1 is older than 6.2"
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.CRYPTO and cp.reason == "kernel 6.1 is older than 6.2" and cp.cause == pl.KERNEL


@pytest.mark.parametrize("fallback,target", [("crypto", pl.CRYPTO), ("software", pl.SOFTWARE), ("keep", pl.KEEP)])
def test_configured_fallbacks(fallback, target):
    cfg = config.parse(f'[[rule]]\nmatch = "*"\nfallback = "{fallback}"\n')
    ch = child(reqid=0)
    (cp,) = pl.plan([ch], cfg, view_for([ch])).children
    assert cp.target == target


def test_rules_by_name_mode_and_interface():
    cfg = config.parse('[[rule]]\nmatch = "gw/off*"\nmode = "off"\n[[rule]]\nmatch = "cr*"\nmode = "crypto"\n'
                       '[[rule]]\nmatch = "*"\ninterface = "eth9"\n')
    off, cr, other = child(name="offme"), child(name="crx", reqid=2, spi_in=2, spi_out=3), child(name="x", reqid=3, spi_in=4, spi_out=5)
    view = view_for([off, cr, other])
    t = {cp.child.name: cp for cp in pl.plan([off, cr, other], cfg, view).children}
    assert t["offme"].target == pl.OFF and t["offme"].cause == pl.CONFIGURED
    assert t["crx"].target == pl.CRYPTO and t["crx"].cause == pl.CONFIGURED
    assert t["x"].target == pl.SOFTWARE and "interface eth9 does not exist" in t["x"].reason and t["x"].cause == pl.NO_DEVICE


def test_child_without_policies_is_not_packet_offloaded():
    ch = child()
    view = view_for([ch])
    view.policies = []
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.CRYPTO and "no policies" in cp.reason and cp.cause == pl.NO_POLICIES


def test_pending_when_states_not_installed():
    ch = child()
    view = view_for([ch])
    view.states = {}
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.PENDING and cp.cause == pl.WAITING


def test_custom_priority_outside_charon_range_refused():
    ch = child()
    view = view_for([ch])
    view.policies = [x.evolve(priority=10) for x in view.policies]
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.CRYPTO and "priority 10" in cp.reason and cp.cause == pl.PRIORITY


def test_more_specific_software_policy_would_be_hidden():
    ch = child()
    view = view_for([ch])
    # a passthrough for one host inside the tunnel's range, ranked above by charon
    sel = o.Selector(2, "10.2.0.9", "10.1.0.0", 32, 24)
    view.policies.append(o.XfrmPolicy(sel, c.XFRM_POLICY_OUT, 200000 - 56 * 512 - 1))
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.CRYPTO and "would hide" in cp.reason and "10.2.0.9/32" in cp.reason and cp.cause == pl.SHADOWED


def test_native_offload_left_alone():
    ch = child()
    view = view_for([ch])
    for k, st in list(view.states.items()):
        inbound = st.daddr == ch.local_host
        view.states[k] = st.evolve(offload=o.Offload(2, 4 | (2 if inbound else 0)))
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target == pl.NATIVE and not pl.state_changes(cp, 0) and cp.cause == pl.CHARON_OFFLOADS


def test_bypasses_per_device_and_family_above_ipsec():
    a = child()
    b = child(name="v6", reqid=2, spi_in=7, spi_out=8, local="2001:db8::1", remote="2001:db8::2", lts=("fd00:1::/64",), rts=("fd00:2::/64",))
    view = view_for([a, b])
    p = pl.plan([a, b], CFG, view)
    assert len(p.bypasses) == 2 * 2 * 2  # addresses (one per family) x ports x directions
    top = min(x.priority for cp in p.children for x in cp.policies)
    for bp in p.bypasses:
        assert bp.priority < top and bp.sel.proto == c.IPPROTO_UDP and not bp.templates
        assert bp.describe().endswith(f"priority 32 allow offload packet dev#{ETH.ifindex}"), bp.describe()
        assert bp.offload == o.Offload(ETH.ifindex, c.XFRM_OFFLOAD_PACKET)
        port = bp.sel.sport if bp.dir == c.XFRM_POLICY_OUT else bp.sel.dport
        assert port in (500, 4500)


def _udp(src: str, dst: str, sport: int = 0, dport: int = 0) -> o.Selector:
    """The selector of one UDP packet."""
    fam, plen = (10, 128) if ":" in src else (2, 32)
    return o.Selector(fam, dst, src, plen, plen, proto=c.IPPROTO_UDP, sport=sport, sport_mask=0xFFFF if sport else 0,
                      dport=dport, dport_mask=0xFFFF if dport else 0)


@pytest.mark.parametrize("port", [500, 4500])
def test_bypasses_cover_the_gateways_own_ike_traffic_only(port):
    """A protected host's UDP from or to port 500/4500 is tunnel traffic, never bypassed."""
    a = child()
    b = child(name="v6", reqid=2, spi_in=7, spi_out=8, local="2001:db8::1", remote="2001:db8::2", lts=("fd00:1::/64",), rts=("fd00:2::/64",))
    p = pl.plan([a, b], CFG, view_for([a, b]))
    out = [bp.sel for bp in p.bypasses if bp.dir == c.XFRM_POLICY_OUT]
    inn = [bp.sel for bp in p.bypasses if bp.dir == c.XFRM_POLICY_IN]
    # charon's own IKE packets, both families, both ways
    for local, peer in (("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")):
        assert any(s.overlaps(_udp(local, peer, sport=port, dport=port)) for s in out), (local, port)
        assert any(s.overlaps(_udp(peer, local, sport=61000, dport=port)) for s in inn), (local, port)
    # a protected host's own IKE or NAT-T traffic through the tunnel, and a clear datagram from
    # the remote subnet to a gateway address inside the local one
    for src, dst, sp, dp in (("10.1.0.2", "10.2.0.2", port, 7000), ("10.1.0.2", "10.2.0.2", 7000, port),
                             ("fd00:1::2", "fd00:2::2", port, port)):
        assert not any(s.overlaps(_udp(src, dst, sp, dp)) for s in out), (src, dst, sp, dp)
    for src, dst in (("10.2.0.2", "10.1.0.1"), ("10.2.0.2", "10.1.0.2"), ("fd00:2::2", "fd00:1::1")):
        assert not any(s.overlaps(_udp(src, dst, sport=port, dport=port)) for s in inn), (src, dst)


def test_bypass_ports_and_addresses_charon_reports_and_the_config_adds():
    """A custom charon port shows up as an IKE_SA's local port (charon binds it on every
    address); agent.ike_addresses adds addresses no IKE_SA uses yet, on a device that carries
    packet offload (only there); a port seen before stays (an IKE_SA that floated to the NAT-T
    port leaves charon answering on its first one)."""
    a = child()
    view = view_for([a])
    other = pl.Device(3, "eth1")
    view.addresses.update({"192.0.2.9": ETH, "198.51.100.1": other})
    ike = IkeSA("hub", 7, "ESTABLISHED", "192.0.2.1", 4510, "203.0.113.5", 61234)
    cfg = dataclasses.replace(CFG, ike_addresses=("192.0.2.9", "198.51.100.1"))
    p = pl.plan([a], cfg, view, [ike], ports_seen=frozenset({5500}))
    got = {(bp.dir, bp.sel.saddr if bp.dir == c.XFRM_POLICY_OUT else bp.sel.daddr, bp.sel.sport or bp.sel.dport) for bp in p.bypasses}
    want = {(d, addr, port) for d in (c.XFRM_POLICY_OUT, c.XFRM_POLICY_IN) for addr in ("192.0.2.1", "192.0.2.9") for port in (500, 4500, 4510, 5500)}
    assert got == want
    assert {bp.sel.ifindex for bp in p.bypasses} == {ETH.ifindex}


@pytest.mark.parametrize(("local", "remote", "lts", "rts", "what"), [
    ("192.0.2.1", "192.0.2.2", ("fd00:1::/64",), ("fd00:2::/64",), "IPv6 in IPv4"),
    ("2001:db8::1", "2001:db8::2", ("10.1.0.0/24",), ("10.2.0.0/24",), "IPv4 in IPv6"),
    ("192.0.2.1", "192.0.2.2", ("10.1.0.0/24", "fd00:1::/64"), ("10.2.0.0/24", "fd00:2::/64"), "IPv6 in IPv4"),
])
def test_cross_family_tunnel_is_refused_with_its_cause(local, remote, lts, rts, what):
    """The kernel cannot carry a packet-offloaded tunnel of the other family: never 'packet'."""
    ch = child(local=local, remote=remote, lts=lts, rts=rts)
    (cp,) = pl.plan([ch], CFG, view_for([ch])).children
    assert cp.target == pl.CRYPTO and cp.cause == pl.SA_UNSUPPORTED and not cp.policies, cp
    assert cp.reason.startswith(f"{what} tunnel can't be carried in packet offload"), cp.reason
    assert pl.cross_family(child(mode="TRANSPORT", lts=("192.0.2.1/32",), rts=("192.0.2.2/32",))) == ""


def test_frozen_ike_sas_keep_their_policies_and_the_bypasses():
    """Objects of an IKE_SA list-sas could not make readable are never stale; a parsed, absent one's are."""
    a, b = child(), child(name="b", uniqueid=2, reqid=2, spi_in=5, spi_out=6, rts=("10.9.0.0/24",))
    p, view = plan_one(a)
    pb = pl.plan([b], CFG, view_for([b]))
    installed = list(p.children[0].policies) + list(pb.children[0].policies) + list(p.bypasses)
    kernel = pl.KernelView.build([], installed, addresses=view.addresses, devices=view.devices)
    stale = {t.reqid for x in pl.plan([], CFG, kernel, frozen=pl.Frozen(frozenset({2}), active=True)).stale_policies for t in x.templates}
    assert stale == {1}  # b's are kept; bypasses too (no templates: not in the set, checked next)
    kept = pl.plan([], CFG, kernel, frozen=pl.Frozen(frozenset({2}), active=True)).stale_policies
    assert all(x.templates for x in kept)
    assert pl.plan([], CFG, kernel, frozen=pl.Frozen(everything=True, active=True)).stale_policies == ()
    assert len(pl.plan([], CFG, kernel).stale_policies) == len(installed)


def test_stale_agent_policies_when_child_is_gone():
    ch = child()
    p, view = plan_one(ch)
    installed = list(p.children[0].policies) + list(p.bypasses)
    _, charon_pols = charon_objects(ch)
    gone = pl.KernelView.build([], installed, addresses=view.addresses, devices=view.devices)
    after = pl.plan([], CFG, gone)
    assert set(map(pl.policy_key, after.stale_policies)) == set(map(pl.policy_key, installed))
    # charon's own policies are never stale for the agent
    again = pl.KernelView.build([], installed + charon_pols, addresses=view.addresses, devices=view.devices)
    assert all(x.sel.user == pl.AGENT_TAG for x in pl.plan([], CFG, again).stale_policies)


@pytest.mark.parametrize("what", ["tfc", "ah", "down"])
def test_sa_the_device_cannot_take_and_a_down_device_have_their_cause(what):
    ch = child(protocol="AH") if what == "ah" else child()
    view = view_for([ch])
    if what == "tfc":
        view.states = {k: st.evolve(tfcpad=1) for k, st in view.states.items()}
    if what == "down":
        view.addresses = {a: dataclasses.replace(d, up=False) for a, d in view.addresses.items()}
    (cp,) = pl.plan([ch], CFG, view).children
    assert cp.target != pl.PACKET and cp.cause == {"tfc": pl.SA_UNSUPPORTED, "ah": pl.SA_UNSUPPORTED, "down": pl.DEVICE_DOWN}[what]
    assert cp.cause in pl.CAUSES


EXACT = dataclasses.replace(ETH, exact_addresses=True)


@pytest.mark.parametrize("name,lts,rts,packet", [
    ("subnets", ("10.1.0.0/24",), ("10.2.0.0/24",), False),
    ("one side a subnet", ("10.1.0.2/32",), ("10.2.0.0/24",), False),
    ("hosts", ("10.1.0.2/32",), ("10.2.0.2/32",), True),
    ("everything", ("0.0.0.0/0",), ("0.0.0.0/0",), True),
    ("ipv6 subnets", ("fd00:1::/64",), ("fd00:2::/64",), False),
])
def test_a_device_steering_addresses_exactly_keeps_subnet_tunnels_out_of_packet_offload(name, lts, rts, packet):
    """mlx5 before 6.15 matches a non-zero policy address exactly in its TX steering: a subnet
    tunnel's packets would miss the device's rule and leave in clear, so it goes to its fallback
    with that reason; host and catch-all selectors are matched right and stay in packet offload."""
    v6 = ":" in lts[0]
    ch = child(lts=lts, rts=rts, **({"local": "2001:db8::1", "remote": "2001:db8::2"} if v6 else {}))
    (cp,), _view = plan_one(ch, devices=(EXACT,))[0].children, None
    if packet:
        assert cp.target == pl.PACKET and cp.reason == "", cp.reason
    else:
        assert cp.target == pl.CRYPTO and cp.cause == pl.SA_UNSUPPORTED  # the default fallback: its TX rules match the SA
        assert "matches policy addresses exactly" in cp.reason and "would leave in clear" in cp.reason
    # the same child on a device that honours prefixes: packet offload
    (cp,) = plan_one(ch)[0].children
    assert cp.target == pl.PACKET
