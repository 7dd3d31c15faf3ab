"""Planning one event's IKE_SAs from the mirrors ends where a full resync ends (issue 13).

Two in-memory kernels take the same charon history; one is reconciled per event for the
event's IKE_SAs only (kernel mirror fed as the monitor feeds it), the other by a full
resync after every event. After every step both hold the same agent objects, offloads and
decisions, while the scoped one plans only the CHILD_SAs the event concerns.
"""

from __future__ import annotations

import random
from dataclasses import replace

from factories import ETH, charon_objects, child, vici_ike

from swan_offload import config
from swan_offload import mirror as mi
from swan_offload import planner as pl
from swan_offload.backend import MemoryBackend
from swan_offload.capability import KernelCaps
from swan_offload.charon_mirror import CharonMirror, Scope, event_scope
from swan_offload.model import SaList
from swan_offload.reconciler import Reconciler

CAPS = KernelCaps(True, "test kernel has packet offload", "6.12.0")


class Charon:
    """charon's IKE_SAs, installing and removing its kernel objects in both kernels."""

    def __init__(self, kernels: list[MemoryBackend], fed: list[Reconciler]) -> None:
        self.kernels, self.fed = kernels, fed
        self.ikes: dict[int, list] = {}

    def _set(self, ch, present: bool) -> None:
        states, pols = charon_objects(ch)
        for k in self.kernels:
            for s in states:
                key = (s.daddr, s.spi, s.proto)
                k.states.__setitem__(key, s) if present else k.states.pop(key, None)
            for p in pols:
                key = pl.policy_key(p)
                k.policies.__setitem__(key, p) if present else k.policies.pop(key, None)
        for r in self.fed:  # what the monitor would have queued
            for s in states:
                r.mirror.apply(mi.Change("state", s if present else None, mi.state_key(s), frozenset({s.reqid})))
            for p in pols:
                r.mirror.apply(mi.Change("policy", p if present else None, pl.policy_key(p), frozenset({p.templates[0].reqid})))

    def up(self, ike_id: int, kids: list) -> None:
        self.ikes[ike_id] = kids
        for ch in kids:
            self._set(ch, True)

    def down(self, ike_id: int) -> None:
        for ch in self.ikes.pop(ike_id):
            # a policy another IKE_SA's CHILD_SA installed too stays (charon counts its users)
            if not any(o.reqid == ch.reqid and o.local_ts == ch.local_ts for kids in self.ikes.values() for o in kids):
                self._set(ch, False)
            else:
                for k in self.kernels:
                    for s in charon_objects(ch)[0]:
                        k.states.pop((s.daddr, s.spi, s.proto), None)
                for r in self.fed:
                    for s in charon_objects(ch)[0]:
                        r.mirror.apply(mi.Change("state", None, mi.state_key(s), frozenset({s.reqid})))

    def sa_list(self, scope: Scope | None = None) -> SaList:
        """list-sas, or what it answers for the queries of ``scope``."""
        out = SaList()
        for i, kids in sorted(self.ikes.items()):
            if scope is None or i in scope.ikes:
                out.add(vici_ike(f"ike{i}", [(ch, "INSTALLED") for ch in kids], uniqueid=i))
            elif any(ike == i for ike, _u in scope.children):
                uids = {u for ike, u in scope.children if ike == i}
                out.add(vici_ike(f"ike{i}", [(ch, "INSTALLED") for ch in kids if ch.uniqueid in uids], uniqueid=i))
        return out


def spoke(ike_id: int, n: int = 1, reqid: int | None = None, rts: str | None = None, spi_base: int = 0, lts: str | None = None, name: str = "c"):
    return [
        child(ike=f"ike{ike_id}", ike_uniqueid=ike_id, name=f"{name}{j}" if name == "c" else name, uniqueid=ike_id * 100 + j + spi_base, reqid=reqid or ike_id * 100 + j,
              spi_in=0xC0000000 + ike_id * 1000 + j + spi_base, spi_out=0xC1000000 + ike_id * 1000 + j + spi_base,
              lts=(lts or f"10.1.{ike_id}.0/24",), rts=(rts or f"10.{2 + j // 16}.{ike_id}.{(j % 16) * 16}/28",))
        for j in range(n)
    ]


def agent_objects(k: MemoryBackend) -> dict:
    return {key: pl.policy_content(p) for key, p in k.policies.items() if pl.is_agent_policy(p)}


def offloads(k: MemoryBackend) -> dict:
    return {key: s.offload for key, s in k.states.items()}


def modes(r: Reconciler) -> dict:
    return {k: (o.mode, o.cause) for k, o in r.outcomes.items()}


# CHILD_SAs named "sw" are left to charon: a broader offloaded tunnel would hide their policies
CFG = config.Config(rules=(config.Rule("sw", "off", "keep"), config.Rule()))


def rig():
    ks, kf = MemoryBackend(), MemoryBackend()
    for k in (ks, kf):
        k.addresses["192.0.2.1"] = ETH
        k.names[ETH.name] = ETH
    rs, rf = Reconciler(ks, CFG, CAPS), Reconciler(kf, CFG, CAPS)
    rs.mirror_fed = True
    charon = Charon([ks, kf], [rs])
    mirror = CharonMirror()
    return ks, kf, rs, rf, charon, mirror


def step(charon: Charon, mirror: CharonMirror, rs: Reconciler, rf: Reconciler, ks, kf, event_ids: set[int] | Scope) -> None:
    scope = event_ids if isinstance(event_ids, Scope) else Scope(ikes=set(event_ids))
    scope |= mirror.scope_of_reqids(rs.mirror.take_touched())  # as the daemon asks about those too
    mirror.update(scope, charon.sa_list(scope))
    plan = rs.reconcile_scope(mirror, scope)
    rf.reconcile(charon.sa_list())
    assert agent_objects(ks) == agent_objects(kf)
    assert offloads(ks) == offloads(kf)
    assert modes(rs) == modes(rf)
    return plan


def test_spokes_come_and_go_and_each_event_plans_its_own_children():
    ks, kf, rs, rf, charon, mirror = rig()
    for i in range(1, 21):
        charon.up(i, spoke(i, n=2))
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    assert {m for m, _c in modes(rs).values()} == {"packet"} and len(rs.outcomes) == 40
    charon.up(21, spoke(21, n=2))
    plan = step(charon, mirror, rs, rf, ks, kf, {21})
    assert {cp.child.ike_uniqueid for cp in plan.children} == {21}  # 2 of 42 planned
    charon.down(5)
    plan = step(charon, mirror, rs, rf, ks, kf, {5})
    assert plan.children == () and not any(o.ike_uniqueid == 5 for o in rs.outcomes.values())
    assert not [p for p in ks.policies.values() if pl.is_agent_policy(p) and p.templates and p.templates[0].reqid // 100 == 5]
    assert rs.scoped_runs == 2 and rs.mirror.loads == 1  # the kernel was read once


def test_reauthentication_keeps_the_shared_reqid_twins():
    """charon's make-before-break reauth: a new IKE_SA with CHILD_SAs of the same reqid and
    selectors; the old one goes. Its twins are the new one's too: they must stay."""
    ks, kf, rs, rf, charon, mirror = rig()
    charon.up(1, spoke(1))
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    twins = agent_objects(ks)
    charon.up(2, [replace(ch, ike_name="ike2", ike_uniqueid=2, uniqueid=999, spi_in=0xC0000999, spi_out=0xC1000999) for ch in spoke(1)])
    step(charon, mirror, rs, rf, ks, kf, {2})
    charon.down(1)
    plan = step(charon, mirror, rs, rf, ks, kf, {1})
    assert agent_objects(ks) == twins and {cp.child.ike_uniqueid for cp in plan.children} == {2}  # the scope grew by the reqid


def test_a_broader_tunnel_elsewhere_is_planned_with_the_event_that_it_would_hide():
    """A new CHILD_SA whose selector lies inside an offloaded one of another IKE_SA: charon ranks
    it higher, so the other one's twin would hide it. Planned together, as a full resync would."""
    ks, kf, rs, rf, charon, mirror = rig()
    charon.up(1, spoke(1, rts="10.2.0.0/16", lts="10.1.0.0/16"))
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    assert rs.outcomes[("ike1", 100)].mode == "packet"
    charon.up(2, spoke(2, rts="10.2.7.0/24", lts="10.1.0.0/16", name="sw"))
    plan = step(charon, mirror, rs, rf, ks, kf, {2})
    assert {cp.child.ike_uniqueid for cp in plan.children} == {1, 2}
    assert rs.outcomes[("ike1", 100)].cause == pl.SHADOWED


def test_random_histories_end_where_full_resyncs_end():
    rng = random.Random(3)
    ks, kf, rs, rf, charon, mirror = rig()
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    next_id = 1
    for _ in range(60):
        roll = rng.random()
        if roll < 0.5 or not charon.ikes:
            shared = rng.random() < 0.2 and charon.ikes
            reqid = charon.ikes[rng.choice(list(charon.ikes))][0].reqid if shared else None
            rts = rng.choice([None, None, "10.2.0.0/16", f"10.2.{rng.randrange(30)}.0/24"])
            lts = rng.choice([None, "10.1.0.0/16"])
            name = rng.choice(["c", "c", "sw"])
            charon.up(next_id, spoke(next_id, n=1 if name == "sw" else rng.randrange(1, 4), reqid=reqid, rts=rts, lts=lts, name=name))
            ids = {next_id}
            next_id += 1
        else:
            victim = rng.choice(list(charon.ikes))
            charon.down(victim)
            ids = {victim}
        step(charon, mirror, rs, rf, ks, kf, ids)
    assert rs.scoped_runs == 60


def test_event_scope_reads_every_shape_of_event():
    a, b = spoke(7, n=2)
    assert event_scope("ike-updown", {"up": "yes", **vici_ike("a", [], uniqueid=7)}) == Scope(ikes={7})
    assert event_scope("child-updown", {"up": "yes", **vici_ike("a", [(a, "INSTALLED")], uniqueid=7)}) == Scope(children={(7, a.uniqueid)})
    rekey = vici_ike("a", [], uniqueid=7)
    rekey["a"]["child-sas"] = {"c0-1": {"old": {"uniqueid": str(a.uniqueid)}, "new": {"uniqueid": str(b.uniqueid)}}}
    assert event_scope("child-rekey", rekey) == Scope(children={(7, a.uniqueid), (7, b.uniqueid)})
    assert event_scope("ike-rekey", {"a": {"old": {"uniqueid": b"3"}, "new": {"uniqueid": b"4"}}}) == Scope(ikes={3, 4})
    assert event_scope("ike-updown", {"a": {"child-sas": {}}}) is None  # no uniqueid: read everything
    assert event_scope("ike-updown", {"a": {"uniqueid": b"x"}}) is None
    assert event_scope("child-updown", {"a": {"uniqueid": b"7", "child-sas": {"x": {"name": "x"}}}}) is None
    assert event_scope("child-updown", []) is None


def test_one_ike_sa_with_many_children_plans_the_event_s_child_alone():
    """The other hub shape: one IKE_SA, many CHILD_SAs; a CHILD_SA event plans that one."""
    ks, kf, rs, rf, charon, mirror = rig()
    kids = spoke(1, n=30)
    charon.up(1, kids[:29])
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    charon.ikes[1] = kids
    charon._set(kids[29], True)  # charon installs the new one's objects alone
    plan = step(charon, mirror, rs, rf, ks, kf, Scope(children={(1, kids[29].uniqueid)}))
    assert [cp.child.key for cp in plan.children] == [kids[29].key]
    # one goes (child-updown down): charon no longer lists it
    charon.ikes[1] = kids[:10] + kids[11:]
    charon._set(kids[10], False)
    plan = step(charon, mirror, rs, rf, ks, kf, Scope(children={(1, kids[10].uniqueid)}))
    assert plan.children == () and kids[10].key not in rs.outcomes and len(rs.outcomes) == 29


def test_charon_mirror_keeps_an_unreadable_ike_sa_as_it_was():
    m = CharonMirror()
    kids = spoke(1, n=2)
    full = SaList()
    full.add(vici_ike("ike1", [(ch, "INSTALLED") for ch in kids], uniqueid=1))
    m.load(full)
    broken = SaList()
    broken.add({"ike1": {"uniqueid": "1", "local-host": "not an address", "child-sas": {}}})
    m.update(Scope(ikes={1}), broken)
    kept = m.sa_list(m.keys_of(Scope(ikes={1})), {1})
    assert sorted(ch.key for ch in kept.children) == sorted(ch.key for ch in kids) and ("ike1", 1) in kept.unreadable
    m.update(Scope(ikes={1}), SaList())  # gone for good
    assert len(m) == 0 and m.with_reqids({kids[0].reqid}) == set()


def test_a_rekey_seen_old_side_first_keeps_its_twins_and_is_never_native():
    """Found by bench/scale.py after a device flap at N=40: 40 rekeys at once; a round planned a
    rekeyed CHILD_SA charon had deleted before the successor's event was read. Its reqid's twins
    went as stale, and the successor, whose SAs the follower had offloaded on arrival, then
    looked like charon's own packet offload ("native"), without twins."""
    ks, kf, rs, rf, charon, mirror = rig()
    (old,) = spoke(1)
    charon.up(1, [old])
    mirror.load(charon.sa_list())
    rs.reconcile(mirror.sa_list())
    rf.reconcile(charon.sa_list())
    twins = agent_objects(ks)
    new = child(ike="ike1", ike_uniqueid=1, name=old.name, uniqueid=777, reqid=old.reqid, spi_in=0xC0000777, spi_out=0xC1000777,
                lts=tuple(t.text for t in old.local_ts), rts=tuple(t.text for t in old.remote_ts))
    # charon installs the successor's SAs (policies unchanged), the follower offloads them
    new_states, _pols = charon_objects(new)
    for r, k in ((rs, ks), (rf, kf)):
        for st in new_states:
            k.states[mi.state_key(st)] = st
            if r is rs:
                r.mirror.apply(mi.Change("state", st, mi.state_key(st), frozenset({st.reqid})))
            assert r.follow(st)
            if r is rs:  # the follower's writes, as their notifications bring them
                r.mirror.apply(mi.Change("state", k.states[mi.state_key(st)], mi.state_key(st), frozenset(), foreign=False))
    # charon deletes the old SAs; the old side is read before the successor's event
    charon.ikes[1] = [new]
    for k in (ks, kf):
        for st in charon_objects(old)[0]:
            k.states.pop(mi.state_key(st))
    for st in charon_objects(old)[0]:
        rs.mirror.apply(mi.Change("state", None, mi.state_key(st), frozenset({st.reqid})))
    rs.mirror.take_touched()
    gone = Scope(children={(1, old.uniqueid)})
    mirror.update(gone, SaList(ikes=[mirror.ikes[1]]))  # listed without it
    rs.reconcile_scope(mirror, gone)
    assert agent_objects(ks) == twins  # charon's policies of the reqid stay: so do the twins
    step(charon, mirror, rs, rf, ks, kf, Scope(children={(1, new.uniqueid)}))
    assert rs.outcomes[new.key].mode == "packet" and agent_objects(ks) == twins
