"""The kernel's states and policies, kept current from its own notifications.

A hub holds tens of thousands of XFRM objects; dumping them all for every CHILD_SA event
made each event cost O(N) (issue 13). One dump loads the mirror; from then on every XFRM
notification, the agent's own writes included, is applied in the kernel's order, so an
event costs what its own objects cost. The mirror is only as good as that stream: a lost
notification (ENOBUFS), a flush, or a device loss (the kernel drops a lost device's
offloaded objects without a word) makes it invalid until the next dump reloads it.

Applying a notification sets or deletes one object by its kernel identity, so a replay of
notifications already reflected in a later dump converges to the kernel's content: the
loader drains what is queued before it dumps, and applies what comes after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import planner as pl
from .policy_index import PolicyIndex
from .xfrm import constants as c
from .xfrm import objects as o

StateKey = tuple[str, int, int]


def state_key(s: o.XfrmState | o.StateId) -> StateKey:
    return (s.daddr, s.spi, s.proto)


def is_larval(s: o.XfrmState) -> bool:
    """A state the kernel holds for a negotiation, not an SA: an SPI charon allocated
    (ALLOCSPI, answered to charon alone) or an acquire's placeholder (which expires without
    a word). Only a dump shows one, and it has no algorithm: the mirror leaves them out, or
    every dump taken mid-negotiation would read as drift."""
    return s.aead is None and s.crypt is None and s.auth is None and s.comp is None


@dataclass(frozen=True, slots=True)
class Change:
    """One notification, decoded: an object set (new or updated) or deleted."""

    kind: str  # "state" | "policy"
    obj: o.XfrmState | o.XfrmPolicy | None  # None: deleted, identified by ``key``
    key: Any
    reqids: frozenset[int]  # the reqids it concerns: a state's, a policy's templates'
    agent: bool = False  # an object the agent tags as its own (policies, probe states)
    foreign: bool = True  # made by someone else than the agent (charon, an operator)


# notification types after which the mirror cannot know what changed
INVALIDATING = {c.XFRM_MSG_FLUSHSA: "the kernel flushed its states", c.XFRM_MSG_FLUSHPOLICY: "the kernel flushed its policies"}


def change_of(mtype: int, msg: Any, foreign: bool = True) -> Change | str | None:
    """The Change a notification makes; a reason text when the mirror must be reloaded;
    None for a notification that changes no object (acquire, soft expiry, ...)."""
    if mtype in INVALIDATING:
        return INVALIDATING[mtype]
    deleted = mtype in (c.XFRM_MSG_DELSA, c.XFRM_MSG_DELPOLICY) or (mtype in (c.XFRM_MSG_EXPIRE, c.XFRM_MSG_POLEXPIRE) and msg["hard"])
    if mtype in (c.XFRM_MSG_NEWSA, c.XFRM_MSG_UPDSA) or (deleted and mtype in (c.XFRM_MSG_DELSA, c.XFRM_MSG_EXPIRE)):
        st = o.state_from_msg(msg)
        return Change("state", None if deleted else st, state_key(st), frozenset({st.reqid}), pl.is_probe_state(st), foreign)
    if mtype in (c.XFRM_MSG_NEWPOLICY, c.XFRM_MSG_UPDPOLICY) or deleted:
        p = o.policy_from_msg(msg)
        return Change("policy", None if deleted else p, pl.policy_key(p), frozenset(t.reqid for t in p.templates), pl.is_agent_policy(p), foreign)
    return None


def change_of_written(mtype: int, obj: Any) -> Change | None:
    """The Change of the agent's own write ``obj`` (xfrm/netlink.py Written), as its echo of
    type ``mtype`` says it happened: no decoding. None if the two do not fit (decode it)."""
    if isinstance(obj, o.XfrmState) and mtype in (c.XFRM_MSG_NEWSA, c.XFRM_MSG_UPDSA):
        return Change("state", obj, state_key(obj), frozenset({obj.reqid}), pl.is_probe_state(obj), foreign=False)
    if isinstance(obj, o.StateId) and mtype == c.XFRM_MSG_DELSA:
        return Change("state", None, state_key(obj), frozenset(), foreign=False)
    if isinstance(obj, o.XfrmPolicy) and mtype in (c.XFRM_MSG_NEWPOLICY, c.XFRM_MSG_UPDPOLICY):
        return Change("policy", obj, pl.policy_key(obj), frozenset(t.reqid for t in obj.templates), pl.is_agent_policy(obj), foreign=False)
    if isinstance(obj, o.PolicyId) and mtype == c.XFRM_MSG_DELPOLICY:
        return Change("policy", None, pl.policy_key(obj), frozenset(), foreign=False)
    return None


def tx_rule(st: o.XfrmState) -> tuple[Any, ...] | None:
    """What a ConnectX keys a packet-offloaded OUT SA's TX rule on (mlx5 6.12, ipsec_fs.c
    tx_add_rule): device, reqid, the selector's upper protocol and ports. One SA per key: a
    second answers EEXIST. None for any other state."""
    off = st.offload
    if off is None or not off.packet or off.inbound:
        return None
    s = st.sel
    return (off.ifindex, st.reqid, s.proto, s.sport & s.sport_mask, s.dport & s.dport_mask)


class KernelMirror:
    """States by (daddr, spi, proto), policies by identity, the policies' index, and the
    packet-offloaded OUT state holding each device TX rule (``tx``)."""

    def __init__(self) -> None:
        self.states: dict[StateKey, o.XfrmState] = {}
        self.tx: dict[tuple[Any, ...], StateKey] = {}
        self.policies: dict[tuple[Any, ...], o.XfrmPolicy] = {}
        self.index = PolicyIndex([], pl.is_agent_policy)
        self.valid = False
        self.why = "not loaded yet"
        self.loads = 0
        self.drift = 0  # objects a reload found wrong, not changed meanwhile (0 while the stream holds)
        # reqids of objects others changed since the last take_touched(), the replaced object's
        # too: charon installing a policy of another reqid over one concerns both CHILD_SAs
        self.touched: set[int] = set()

    def invalidate(self, why: str) -> None:
        if self.valid:
            self.valid, self.why = False, why

    def load(self, states: list[o.XfrmState], policies: list[o.XfrmPolicy]) -> dict[tuple[str, Any], str]:
        """Replace everything by one dump; returns the objects the mirror had wrong, as
        ("state"|"policy", key) -> "missing" | "extra" | "different" (in what the planner
        reads), when it was valid. The caller excuses those changed while the dump ran (see
        daemon)."""
        new_states = {state_key(s): s for s in states if not is_larval(s)}
        new_policies = {pl.policy_key(p): p for p in policies}
        wrong: dict[tuple[str, Any], str] = {}
        if self.valid:
            wrong = {("state", k): how for k, how in _differ(self.states, new_states, _state_content).items()}
            wrong |= {("policy", k): how for k, how in _differ(self.policies, new_policies, pl.policy_content).items()}
        self.states, self.policies = new_states, new_policies
        self.tx = {r: k for k, st in new_states.items() if (r := tx_rule(st)) is not None}
        self.index = PolicyIndex(list(new_policies.values()), pl.is_agent_policy)
        self.valid, self.why, self.touched = True, "", set()
        self.loads += 1
        return wrong

    def take_touched(self) -> set[int]:
        out, self.touched = self.touched, set()
        return out

    def apply(self, ch: Change) -> None:
        if ch.foreign:
            self.touched |= ch.reqids
        if ch.kind == "state":
            gone = self.states.pop(ch.key, None)
            if gone is not None:
                if ch.foreign:
                    self.touched.add(gone.reqid)
                if (r := tx_rule(gone)) is not None and self.tx.get(r) == ch.key:
                    del self.tx[r]
            if ch.obj is not None:
                assert isinstance(ch.obj, o.XfrmState)
                self.states[ch.key] = ch.obj
                if (r := tx_rule(ch.obj)) is not None:
                    self.tx[r] = ch.key
            return
        old = self.policies.pop(ch.key, None)
        if old is not None:
            self.index.remove(old)
            if ch.foreign:
                self.touched |= {t.reqid for t in old.templates}
        if ch.obj is not None:
            assert isinstance(ch.obj, o.XfrmPolicy)
            self.policies[ch.key] = ch.obj
            self.index.add(ch.obj)

    def tx_holder(self, st: o.XfrmState) -> o.XfrmState | None:
        """Another SA holding the device TX rule ``st`` would need (``tx_rule``)."""
        r = tx_rule(st)
        k = self.tx.get(r) if r is not None else None
        return self.states.get(k) if k is not None and k != state_key(st) else None

    # the reconciler's own writes, applied at once (their notifications replay them later)
    def put_state(self, st: o.XfrmState) -> None:
        self.apply(Change("state", st, state_key(st), frozenset(), foreign=False))

    def drop_state(self, sid: o.XfrmState | o.StateId) -> None:
        self.apply(Change("state", None, state_key(sid), frozenset(), foreign=False))

    def put_policy(self, p: o.XfrmPolicy) -> None:
        self.apply(Change("policy", p, pl.policy_key(p), frozenset(), foreign=False))

    def drop_policy(self, pid: o.XfrmPolicy | o.PolicyId) -> None:
        self.apply(Change("policy", None, pl.policy_key(pid), frozenset(), foreign=False))


def _state_content(s: o.XfrmState) -> tuple[Any, ...]:
    """What planning reads of a state (not its counters, which move all the time)."""
    return (s.reqid, s.mode, s.offload, s.sel, s.mark, s.if_id, s.encap, s.flags)


def _differ(old: dict[Any, Any], new: dict[Any, Any], content: Any) -> dict[Any, str]:
    """Keys the mirror (``old``) has wrong against a dump (``new``), and how."""
    out = {k: "missing" for k in new.keys() - old.keys()} | {k: "extra" for k in old.keys() - new.keys()}
    return out | {k: "different" for k in old.keys() & new.keys() if content(old[k]) != content(new[k])}


def describe(kind: str, key: Any) -> str:
    """An object's identity for a log line (addresses, SPI, selector: never keys)."""
    if kind == "state":
        daddr, spi, proto = key
        return f"state {daddr} spi 0x{spi:08x} proto {proto}"
    sel, d, mark, if_id = key
    return f"policy {sel.saddr}/{sel.prefixlen_s} -> {sel.daddr}/{sel.prefixlen_d} proto {sel.proto} dir {d}" + (
        f" mark {mark}" if mark else "") + (f" if_id {if_id}" if if_id else "")
