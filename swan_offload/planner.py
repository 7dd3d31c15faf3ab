"""Pure planner: from CHILD_SAs, config and a kernel snapshot, the objects that should exist.

No sockets here. The reconciler feeds it what it read and applies the result.
Agent-installed policies are tagged in the selector's ``user`` field: the
kernel compares whole selectors for identity but never matches on ``user``, so
a tagged policy can sit beside charon's own one, covers the same packets, and
is recognisable from the kernel alone after a restart.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Collection, Container
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Config, Rule
from .model import ChildSA, IkeSA
from .policy_index import PolicyIndex
from .vocab import Cause, Mode
from .xfrm import constants as c
from .xfrm.objects import LifetimeCur, Offload, PolicyId, Selector, XfrmPolicy, XfrmState

AGENT_TAG = 0x73776F66  # "swof" in xfrm_selector.user
PROBE_REQID = AGENT_TAG  # probe states: no charon template carries it, so no packet ever uses one
CHARON_DEFAULT_BASE = 400000  # 2 * PRIO_BASE: charon's regular and trap policies
CHARON_MAX_SPECIFICITY = 131459

# targets a CHILD_SA can end in, and why one is not packet (vocab.py), by their short names here
PACKET, CRYPTO, SOFTWARE, KEEP = Mode.PACKET, Mode.CRYPTO, Mode.SOFTWARE, Mode.KEEP
OFF, NATIVE, PENDING = Mode.OFF, Mode.NATIVE, Mode.PENDING
CONFIGURED, WAITING, CHARON_OFFLOADS = Cause.CONFIGURED, Cause.WAITING, Cause.CHARON_OFFLOADS
KERNEL, NO_DEVICE, DEVICE_DOWN, DEVICE_REFUSED = Cause.KERNEL, Cause.NO_DEVICE, Cause.DEVICE_DOWN, Cause.DEVICE_REFUSED
REQID, SA_UNSUPPORTED, NO_POLICIES, PRIORITY, SHADOWED = Cause.REQID, Cause.SA_UNSUPPORTED, Cause.NO_POLICIES, Cause.PRIORITY, Cause.SHADOWED
# xfrm_bundle_create (6.12.19, unchanged through 6.19) keeps the policy's inner family for a
# packet-offloaded state and routes the outer addresses in it, so every packet fails
# (XfrmOutBundleGenError); mlx5 takes the inner ethertype on receive from the outer family.
# strongSwan's tunnel SAs carry no selector family that later fixes key on.
CROSS_FAMILY_WHY = "the kernel routes the outer header in the inner family (XfrmOutBundleGenError) and the device decapsulates by the outer one"
CAUSES = tuple(Cause)


@dataclass(frozen=True)
class Device:
    ifindex: int
    name: str
    up: bool = True  # IFF_UP: a device going down drops every SA and policy offloaded to it
    exact_addresses: bool = False  # its TX steering ignores a policy's prefix length (drvinfo.py)


@dataclass
class KernelView:
    """What the kernel holds, as read by one dump of states and one of policies (or as the
    kernel mirror holds it, with its index already built)."""

    states: dict[tuple[str, int, int], XfrmState] = field(default_factory=dict)
    policies: Collection[XfrmPolicy] = field(default_factory=list)
    packet_offload: bool = True
    packet_offload_reason: str = ""
    addresses: dict[str, Device] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    refusing_devices: dict[int, str] = field(default_factory=dict)
    crypto_refusing: dict[int, str] = field(default_factory=dict)
    refused_children: dict[tuple[str, int], str] = field(default_factory=dict)  # the device refused this CHILD_SA's SAs
    policy_index: PolicyIndex | None = None
    # states the agent itself offloaded (its held copies): a CHILD_SA of those is never "native",
    # even while its twins are missing
    agent_offloaded: Collection[tuple[str, int, int]] = frozenset()

    @classmethod
    def build(cls, states: list[XfrmState], policies: list[XfrmPolicy], **kw: object) -> KernelView:
        return cls({(s.daddr, s.spi, s.proto): s for s in states}, list(policies), **kw)  # type: ignore[arg-type]

    def state(self, daddr: str, spi: int) -> XfrmState | None:
        return self.states.get((daddr, spi, c.IPPROTO_ESP))

    @property
    def index(self) -> PolicyIndex:
        """``policies`` by reqid and by destination, built on first use (once per plan)."""
        if self.policy_index is None:
            self.policy_index = PolicyIndex(list(self.policies), is_agent_policy)
        return self.policy_index


@dataclass(frozen=True)
class Frozen:
    """Kernel objects of IKE_SAs whose list-sas entry did not parse: left exactly as they are.

    Policies are recognised by reqid; ``everything`` (an entry that did not even name its
    IKE_SA) leaves every agent policy in place.
    """

    reqids: frozenset[int] = frozenset()
    everything: bool = False
    active: bool = False  # some entry was unreadable: bypasses in place stay too


@dataclass(frozen=True)
class Scope:
    """A plan of some IKE_SAs only (an event's), and what the rest contributes to it.

    ``reqids``: the reqids whose agent policies this plan owns (unwanted ones are retired);
    the bypasses and probe states of the rest are never touched. ``packet_reqids`` and
    ``devices``: the reqids and devices in packet offload outside the scope.
    """

    reqids: frozenset[int]
    packet_reqids: Container[int] = frozenset()
    devices: frozenset[Device] = frozenset()


@dataclass(frozen=True)
class ChildPlan:
    child: ChildSA
    rule: Rule
    target: str
    device: Device | None = None
    state_out: XfrmState | None = None
    state_in: XfrmState | None = None
    policies: tuple[XfrmPolicy, ...] = ()
    reason: str = ""  # why the target is not packet (empty when it is)
    cause: str = ""  # the reason's class, one of CAUSES

    crypto_refusal: str = ""  # set when the device is known not to take crypto offload
    # its OUT SA stays where it is: a newer CHILD_SA of its reqid takes the device's one TX
    # rule of that reqid (see one_tx_rule_per_reqid)
    out_stays: bool = False

    def fallback(self, reason: str, cause: str) -> ChildPlan:
        """The same child sent to its configured fallback, with the reason and its class recorded."""
        dev = None if self.crypto_refusal else self.device
        if self.crypto_refusal and self.rule.fallback == CRYPTO:
            reason = f"{reason}; crypto offload refused: {self.crypto_refusal}"
        return replace(self, target=fallback_target(self.rule, dev), policies=(), reason=reason, cause=cause)


@dataclass(frozen=True)
class Plan:
    children: tuple[ChildPlan, ...]
    bypasses: tuple[XfrmPolicy, ...]
    stale_policies: tuple[XfrmPolicy, ...]
    stale_states: tuple[XfrmState, ...] = ()  # probe states left by an agent that was killed


def is_agent_policy(p: XfrmPolicy) -> bool:
    return p.sel.user == AGENT_TAG


def is_probe_state(s: XfrmState) -> bool:
    """Only probes are agent-made states; charon's moved states keep charon's selector."""
    return s.sel.user == AGENT_TAG


def fallback_target(rule: Rule, device: Device | None) -> str:
    if rule.fallback == CRYPTO:
        return CRYPTO if device else SOFTWARE
    return rule.fallback


def hw_priority(sw: int, top: int) -> int | None:
    """Map charon's automatic priority into the agent's band, keeping charon's order."""
    x = CHARON_DEFAULT_BASE - sw
    if not 0 <= x <= CHARON_MAX_SPECIFICITY:
        return None
    return top - (x >> 1)


def offload_for(target: str, device: Device | None, inbound: bool) -> Offload | None:
    if target not in (PACKET, CRYPTO) or device is None:
        return None
    flags = (c.XFRM_OFFLOAD_PACKET if target == PACKET else 0) | (c.XFRM_OFFLOAD_INBOUND if inbound else 0)
    return Offload(device.ifindex, flags)


def out_seq(st: XfrmState) -> int:
    """The outbound sequence number, 64 bits with ESN."""
    if st.replay_esn is not None:
        return (st.replay_esn.oseq_hi << 32) | st.replay_esn.oseq
    return st.replay.oseq if st.replay is not None else 0


def moved_state(current: XfrmState, offload: Offload | None, outbound: bool, seq_margin: int) -> XfrmState:
    """The state that replaces ``current``: same SA, new offload, counters carried.

    Outbound sequence numbers jump ahead by ``seq_margin`` to cover packets sent
    between the read and the delete; the peer accepts forward jumps, never repeats.
    """
    replay, esn = current.replay, current.replay_esn
    if outbound and esn is not None:
        total = out_seq(current) + seq_margin
        esn = replace(esn, oseq=total & 0xFFFFFFFF, oseq_hi=total >> 32)
    elif outbound and replay is not None:
        replay = replace(replay, oseq=min(replay.oseq + seq_margin, 0xFFFFFFFF))
    return replace(current, offload=offload, replay=replay, replay_esn=esn, lastused=None, sa_dir=None)


def sequence_used_up(st: XfrmState) -> bool:
    """An outbound SA without ESN at the last sequence number: the kernel refuses to send on it
    (EOVERFLOW) rather than wrap."""
    return st.replay_esn is None and st.replay is not None and st.replay.oseq >= 0xFFFFFFFF


def state_key(st: XfrmState) -> tuple[str, int, int]:
    return (st.daddr, st.spi, st.proto)


def sa_shape(st: XfrmState) -> tuple[Any, ...]:
    """An SA without its key and SPI: a rekey of an SA has the same shape, and a device
    answers an SA of the same shape the same way."""
    algos = tuple((a.name, a.key_bits, a.icv_len, a.trunc_len) if a else None for a in (st.aead, st.crypt, st.auth, st.comp))
    esn = (st.flags & c.XFRM_STATE_ESN, st.replay_esn.bmp_len if st.replay_esn else None)
    return (st.family, st.daddr, st.saddr, st.reqid, st.proto, st.mode, algos, st.encap, esn, st.replay_window, st.mark, st.if_id, st.sel)


def state_matches(current: XfrmState, offload: Offload | None) -> bool:
    cur = current.offload
    if offload is None or cur is None:
        return offload is None and cur is None
    return cur.ifindex == offload.ifindex and cur.packet == offload.packet


def reqid_clashes(children: list[ChildSA]) -> dict[tuple[str, int], str]:
    """Children sharing a reqid with different selectors: the hardware could not tell them apart."""
    by_reqid: dict[int, list[ChildSA]] = defaultdict(list)
    for ch in children:
        if ch.reqid:
            by_reqid[ch.reqid].append(ch)
    out = {}
    for reqid, group in by_reqid.items():
        if len({ch.selectors for ch in group}) > 1:
            names = ", ".join(sorted({f"{ch.ike_name}/{ch.name}" for ch in group}))
            for ch in group:
                out[ch.key] = f"reqid {reqid} is shared by children with different traffic selectors ({names})"
    return out


def _charon_policies(view: KernelView, reqid: int) -> list[XfrmPolicy]:
    """Policies not the agent's, main type, dir in or out, with a template of ``reqid``."""
    return view.index.charon(reqid)


def _out_policies(view: KernelView, reqid: int) -> list[XfrmPolicy]:
    """charon's OUT policies of a reqid: the ones that get offloaded twins.

    IN policies stay charon's, in software. Kernel 6.12 accepts a clear packet that matches a
    packet-offloaded IN policy as if its template were met (measured in the lab:
    tests/lab/jobs/sim_in_policy.sh), so an offloaded IN twin would open the tunnel's
    selector to clear traffic from the wire. Receive needs no offloaded policy: the device
    decrypts by SA (mlx5's RX policy table misses to its SA table), and the kernel accepts a
    packet the device decrypted before any policy lookup (__xfrm_policy_check2), while
    charon's software IN policy still drops clear ones (XfrmInTmplMismatch).
    """
    return [p for p in _charon_policies(view, reqid) if p.dir == c.XFRM_POLICY_OUT]


def _missteered(view: KernelView, reqid: int, device: Device | None) -> str:
    """Why ``device`` would let packets of the reqid's OUT policies leave in clear: its TX
    steering matches a non-zero address exactly, and a selector is a subnet. '' if it would not."""
    if device is None or not device.exact_addresses:
        return ""
    for sw in _out_policies(view, reqid):
        sel = sw.sel
        full = 32 if sel.family == socket.AF_INET else 128
        for addr, plen in ((sel.saddr, sel.prefixlen_s), (sel.daddr, sel.prefixlen_d)):
            if plen < full and int(ipaddress.ip_address(addr)):  # a zero address is not programmed: any
                return (f"device {device.name} matches policy addresses exactly in its TX steering (mlx5 before Linux 6.15 "
                        f"ignores the prefix length): packets of {sel.describe()} other than {addr} would leave in clear")
    return ""


def _hw_policy(sw: XfrmPolicy, prio: int, device: Device) -> XfrmPolicy:
    """charon's policy as a packet-offloaded twin in the agent's band.

    The template names no SPI (charon 5.9 names the outbound one): the kernel then takes the
    newest valid SA of the reqid, which is the one charon just installed. A twin naming the SPI
    would have to be updated in the instant between charon installing the new outbound SA and
    deleting the old one, and traffic stops whenever that update comes late.
    """
    return replace(
        sw,
        sel=replace(sw.sel, user=AGENT_TAG),
        priority=prio,
        index=0,
        curlft=LifetimeCur(),
        templates=tuple(replace(t, spi=0) for t in sw.templates),
        offload=Offload(device.ifindex, c.XFRM_OFFLOAD_PACKET),
    )


class _Either:
    """Membership in either of two containers (the scope's reqids, and the rest's)."""

    def __init__(self, a: Container[int], b: Container[int]) -> None:
        self.a, self.b = a, b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b


def _shadowed(view: KernelView, sw: XfrmPolicy, packet_reqids: Container[int]) -> XfrmPolicy | None:
    """The software policy charon ranks highest above ``sw`` that a packet-offload twin would hide."""
    hidden = [
        q
        for q in view.index.overlapping(sw)
        if q.priority < sw.priority and not (q.templates and all(t.reqid in packet_reqids for t in q.templates))
    ]
    return min(hidden, key=lambda q: (q.priority, q.index), default=None)


def device_down(name: str | None) -> str:
    """Why a CHILD_SA of a device that is down is not offloaded (the plan's and the link event's words)."""
    return f"device {name} is down; offloaded again when it is up"


def _device_for(child: ChildSA, rule: Rule, view: KernelView) -> tuple[Device | None, str]:
    if rule.interface:
        dev = view.devices.get(rule.interface)
        return dev, "" if dev else f"interface {rule.interface} does not exist"
    dev = view.addresses.get(child.local_host)
    return dev, "" if dev else f"no device owns the local address {child.local_host}"


def cross_family(child: ChildSA) -> str:
    """'IPv6 in IPv4' for a tunnel carrying traffic of the other family; '' otherwise."""
    outer = 6 if ":" in child.local_host else 4
    inner = {ts.family for ts in (*child.local_ts, *child.remote_ts)} - {outer}
    if child.mode != "TUNNEL" or not inner:
        return ""
    return f"IPv{inner.pop()} in IPv{outer}"


def plan_child(child: ChildSA, cfg: Config, view: KernelView, clash: str | None) -> ChildPlan:
    """First pass for one child: its target before looking at policy overlaps."""
    rule = cfg.rule_for(child.ike_name, child.name)
    out = view.state(child.remote_host, child.spi_out)
    inn = view.state(child.local_host, child.spi_in)
    base = ChildPlan(child, rule, OFF, state_out=out, state_in=inn)
    if rule.mode == OFF:
        return replace(base, reason="offload is off for this connection", cause=CONFIGURED)
    if out is None or inn is None:
        return replace(base, target=PENDING, reason="SAs not (yet) in the kernel", cause=WAITING)
    if child.state not in ("INSTALLED", ""):
        # rekeyed or being deleted: charon removes it soon; its policies stay for the successor
        return replace(base, target=PENDING, reason=f"CHILD_SA is {child.state}", cause=WAITING)
    device, why = _device_for(child, rule, view)
    mixed = cross_family(child)
    if device is not None and not device.up:
        # the kernel would flush offloaded objects again the moment they got in
        return replace(base, device=None).fallback(device_down(device.name), DEVICE_DOWN)
    crypto_refusal = view.crypto_refusing.get(device.ifindex, "") if device else ""
    crypto_ok = device is not None and not crypto_refusal
    base = replace(base, device=device, crypto_refusal=crypto_refusal)
    mine = bool(view.index.agent(child.reqid)) or any(state_key(st) in view.agent_offloaded for st in (out, inn))
    if out.offload and out.offload.packet and inn.offload and inn.offload.packet and not mine:
        return replace(base, target=NATIVE, reason="charon offloads this SA itself", cause=CHARON_OFFLOADS)
    if rule.mode == CRYPTO:
        if not crypto_ok:
            return replace(base, target=SOFTWARE, reason=why or crypto_refusal, cause=NO_DEVICE if device is None else DEVICE_REFUSED)
        return replace(base, target=CRYPTO, reason="crypto offload configured", cause=CONFIGURED)
    for bad, text, cause in (
        (not view.packet_offload, view.packet_offload_reason or "kernel has no packet offload", KERNEL),
        (device is None, why, NO_DEVICE),
        (device is not None and device.ifindex in view.refusing_devices, view.refusing_devices.get(device.ifindex if device else -1, ""), DEVICE_REFUSED),
        (child.key in view.refused_children, f"packet offload refused: {view.refused_children.get(child.key)}", DEVICE_REFUSED),
        (child.reqid == 0, "reqid 0: hardware matches SA and policy by reqid", REQID),
        (child.protocol != "ESP", f"protocol {child.protocol}: only ESP can be offloaded", SA_UNSUPPORTED),
        (clash is not None, clash or "", REQID),
        (out.tfcpad or inn.tfcpad, "TFC padding can't be offloaded", SA_UNSUPPORTED),
        (out.sec_ctx is not None or inn.sec_ctx is not None, "security context can't be offloaded", SA_UNSUPPORTED),
        (bool(mixed), f"{mixed} tunnel can't be carried in packet offload: {CROSS_FAMILY_WHY}", SA_UNSUPPORTED),
        (bool(missteered := _missteered(view, child.reqid, device)), missteered, SA_UNSUPPORTED),
    ):
        if bad:
            return base.fallback(text, cause)
    if not _charon_policies(view, child.reqid):
        return base.fallback("charon installed no policies for this CHILD_SA (policies = no?)", NO_POLICIES)
    assert device is not None
    hws = []
    for sw in _out_policies(view, child.reqid):
        prio = hw_priority(sw.priority, cfg.priority_top)
        if prio is None:
            return base.fallback(f"policy priority {sw.priority} is outside charon's automatic range; remove 'priority =' to offload", PRIORITY)
        hws.append(_hw_policy(sw, prio, device))
    return replace(base, target=PACKET, policies=tuple(hws))


def _bypasses(
    cfg: Config, plans: list[ChildPlan], ikes: list[IkeSA], view: KernelView, ports_seen: frozenset[int], elsewhere: frozenset[Device] = frozenset(),
) -> tuple[XfrmPolicy, ...]:
    """IKE bypass policies for the gateway's own IKE traffic on each device carrying packet offload.

    The device's policy table sees IKE packets that charon's per-socket bypass let out, so they
    need bypasses there, above every IPsec policy. Each names a local IKE address and port:
    a bypass of ports alone would also pass a protected host's UDP from or to port 500/4500 in
    clear, out of the tunnel and into it, above every tunnel policy. charon binds its ports on
    every address, so each port it was seen using (``ports_seen``, kept by the caller: an
    IKE_SA that floats to the NAT-T port leaves its first one in use) covers every address.
    """
    devices = {p.device for p in plans if p.target == PACKET and p.device} | elsewhere
    on: set[tuple[Device, str]] = {(p.device, p.child.local_host) for p in plans if p.target == PACKET and p.device}
    for addr in [i.local_host for i in ikes] + list(cfg.ike_addresses):
        dev = view.addresses.get(addr)
        if dev is not None and dev in devices:
            on.add((dev, addr))
    ports = sorted(set(cfg.ike_ports) | charon_ports(ikes, [p.child for p in plans]) | ports_seen)
    out = []
    for dev, addr in sorted(on, key=lambda x: (x[0].ifindex, x[1])):
        fam, plen, any_addr = (socket.AF_INET6, 128, "::") if ":" in addr else (socket.AF_INET, 32, "0.0.0.0")
        for port in ports:
            for sel in (
                Selector(fam, any_addr, addr, 0, plen, proto=c.IPPROTO_UDP, sport=port, sport_mask=0xFFFF, ifindex=dev.ifindex, user=AGENT_TAG),
                Selector(fam, addr, any_addr, plen, 0, proto=c.IPPROTO_UDP, dport=port, dport_mask=0xFFFF, ifindex=dev.ifindex, user=AGENT_TAG),
            ):
                d = c.XFRM_POLICY_OUT if sel.sport_mask else c.XFRM_POLICY_IN
                out.append(XfrmPolicy(sel, d, cfg.bypass_priority, offload=Offload(dev.ifindex, c.XFRM_OFFLOAD_PACKET)))
    return tuple(out)


def charon_ports(ikes: list[IkeSA], children: list[ChildSA]) -> frozenset[int]:
    """The local IKE ports charon reports for its IKE_SAs (a CHILD_SA names its IKE_SA's)."""
    return frozenset({i.local_port for i in ikes} | {ch.local_port for ch in children}) - {0}


def policy_key(p: XfrmPolicy | PolicyId) -> tuple[Any, ...]:
    """The kernel's identity of a policy (selector, dir, mark, if_id)."""
    return (p.sel, p.dir, p.mark, p.if_id)


def policy_content(p: XfrmPolicy) -> tuple[Any, ...]:
    """What can differ in a policy of the same identity (priority, templates): changed by update."""
    return (p.priority, p.action, p.templates)


def plan(
    children: list[ChildSA], cfg: Config, view: KernelView, ikes: list[IkeSA] | None = None,
    frozen: Frozen | None = None, ports_seen: frozenset[int] = frozenset(), scope: Scope | None = None,
) -> Plan:
    """``ikes``: charon's IKE_SAs (bypasses for their local addresses; children name theirs too);
    ``frozen``: objects of IKE_SAs that list-sas could not make readable, never stale;
    ``ports_seen``: IKE ports charon was seen using before (see _bypasses);
    ``scope``: plan these IKE_SAs only (the caller makes sure it holds every CHILD_SA of
    their reqids and of the policies theirs overlap); None: everything."""
    frozen = frozen or Frozen()
    clashes = reqid_clashes(children)
    plans = [plan_child(ch, cfg, view, clashes.get(ch.key)) for ch in children]
    # second pass: a packet twin must not hide a software policy charon prefers
    packet_reqids = _Either({p.child.reqid for p in plans if p.target == PACKET}, scope.packet_reqids if scope else frozenset())
    for i, p in enumerate(plans):
        if p.target != PACKET:
            continue
        for sw in _out_policies(view, p.child.reqid):
            q = _shadowed(view, sw, packet_reqids)
            if q is not None:
                plans[i] = p.fallback(f"offloading would hide {q.describe()}, which charon ranks above this CHILD_SA", SHADOWED)
                break
    plans = one_tx_rule_per_reqid(plans)
    bypasses = _bypasses(cfg, plans, ikes or [], view, ports_seen, scope.devices if scope else frozenset())
    wanted = {policy_key(x) for x in bypasses} | {policy_key(x) for p in plans for x in p.policies}
    # policies of children still pending are not stale: they may still be needed; nor are those
    # of IKE_SAs list-sas did not make readable, nor (then) the bypasses their IKE traffic may need
    keep_reqids = {p.child.reqid for p in plans if p.target in (PENDING,)} | frozen.reqids
    if scope is not None:
        # a reqid whose CHILD_SAs are all gone from this scope while charon's policies of it stay
        # is a rekey whose successor the scope does not hold yet (its event is on its way): its
        # twins stay. A full resync, with list-sas in full, decides those.
        planned = {p.child.reqid for p in plans}
        keep_reqids |= {r for r in scope.reqids if r not in planned and view.index.charon(r)}
    if scope is None:
        candidates: Collection[XfrmPolicy] = view.policies
    else:  # the scope's own agent policies (a bypass names no reqid: never one of them)
        candidates = list({id(p): p for r in sorted(scope.reqids) for p in view.index.agent(r)}.values())
    stale = tuple(
        p
        for p in candidates
        if is_agent_policy(p)
        and policy_key(p) not in wanted
        and not any(t.reqid in keep_reqids for t in p.templates)
        and not frozen.everything
        and not (frozen.active and not p.templates)
    )
    probes = tuple(s for s in view.states.values() if is_probe_state(s)) if scope is None else ()
    return Plan(tuple(plans), bypasses, stale, probes)


def one_tx_rule_per_reqid(plans: list[ChildPlan]) -> list[ChildPlan]:
    """Of the CHILD_SAs of one reqid going to packet offload on one device (a duplicate
    CHILD_SA, charon's same config twice: same reqid, same selectors), only the newest moves
    its OUT SA: a ConnectX (mlx5 6.12, ipsec_fs.c tx_add_rule) holds one TX rule per reqid and
    upper protocol and refuses a second (EEXIST). The kernel sends on the newest SA of the
    reqid anyway (the twin's template names no SPI); the others' OUT SAs carry nothing."""
    newest: dict[tuple[int, int], int] = {}
    for p in plans:
        if p.target == PACKET and p.device is not None:
            k = (p.device.ifindex, p.child.reqid)
            newest[k] = max(newest.get(k, 0), p.child.uniqueid)
    return [
        replace(p, out_stays=True)
        if p.target == PACKET and p.device is not None and newest[(p.device.ifindex, p.child.reqid)] != p.child.uniqueid
        else p
        for p in plans
    ]


def state_changes(p: ChildPlan, seq_margin: int) -> list[tuple[XfrmState, XfrmState]]:
    """(current, replacement) for each of the child's states whose offload must change."""
    if p.target not in (PACKET, CRYPTO, SOFTWARE):
        return []
    out = []
    for cur, inbound in ((p.state_out, False), (p.state_in, True)):
        if cur is None or (p.out_stays and not inbound):
            continue
        want = offload_for(p.target, p.device, inbound)
        if not state_matches(cur, want):
            out.append((cur, moved_state(cur, want, not inbound, seq_margin)))
    return out

