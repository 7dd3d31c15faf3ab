"""Moving one CHILD_SA's states between software and a device, and setting its policies.

A state moves by DELSA+NEWSA of the same SPI in one netlink batch (the kernel allows
neither two states with one SPI nor adding offload by UPDSA). Before a move, a probe state
with a random SPI and key asks the device whether it takes this SA, once per device and SA
shape, so a refusal never touches charon's SA. If the move itself fails, the original state
is put back at once (``_undo``) and the caller sends the child to its fallback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from . import planner as pl
from .backend import AddPolicy, AddState, Backend, DelPolicy, DelState, Op, random_spi
from .config import Config
from .held import HeldCopies, Key
from .mirror import KernelMirror, StateKey, state_key
from .xfrm.netlink import XfrmError
from .xfrm.objects import Algo, LifetimeCur, Secret, XfrmState

log = logging.getLogger("swan_offload.reconciler")


def probe_state(st: XfrmState) -> XfrmState:
    """A throwaway twin of ``st``: random SPI and key, same algorithm and offload.

    Its reqid is one no policy template names, so the kernel never picks it for
    traffic (a newer state would otherwise win charon's outbound lookups), and
    its selector carries the agent tag, so a leftover is found after a crash.
    """

    def rnd(a: Algo | None) -> Algo | None:
        return replace(a, key=Secret(os.urandom(len(a.key)))) if a is not None else None

    return replace(
        st, spi=random_spi(), reqid=pl.PROBE_REQID, sel=replace(st.sel, user=pl.AGENT_TAG),
        aead=rnd(st.aead), crypt=rnd(st.crypt), auth=rnd(st.auth), curlft=LifetimeCur(),
    )  # fmt: skip


def probe_shape(st: XfrmState) -> tuple[Any, ...]:
    """What a device judges an SA by, without addresses, SPI, keys or lifetimes in seconds
    (charon randomises those per SA): SAs of one shape get the same answer, so a device is
    probed once per shape, not once per CHILD_SA (issue 13: hubs move thousands of them)."""
    assert st.offload is not None
    algos = tuple((a.name, a.key_bits, a.icv_len, a.trunc_len) if a else None for a in (st.aead, st.crypt, st.auth, st.comp))
    esn = (st.replay_esn.bmp_len, st.replay_esn.replay_window) if st.replay_esn else None
    lft = st.lft
    limits = (lft.soft_byte_limit, lft.hard_byte_limit, lft.soft_packet_limit, lft.hard_packet_limit)
    return (st.offload.ifindex, st.offload.flags, st.family, st.proto, st.mode, algos, st.encap.type if st.encap else None,
            st.flags, st.replay_window, esn, st.tfcpad, limits, st.reqid == 0, st.sel.family, st.sel.proto,
            st.sec_ctx is not None, st.sa_dir)


class Mover:
    """Moves for the reconciler, with what devices answered: ``accepted`` SA shapes (not
    probed again until the device goes down) and ``crypto_refusing`` devices (the planner
    reads them). Refusals per CHILD_SA stay the reconciler's."""

    def __init__(self, backend: Backend, cfg: Config, mirror: KernelMirror, held: HeldCopies) -> None:
        self.backend = backend
        self.cfg = cfg
        self.mirror = mirror
        self.held = held
        self.accepted: set[tuple[Any, ...]] = set()
        self.crypto_refusing: dict[int, str] = {}

    def device_lost(self, ifindex: int) -> None:
        """A device back from down is asked anew."""
        self.accepted = {k for k in self.accepted if k[0] != ifindex}

    def probe(self, changes: list[tuple[XfrmState, XfrmState]]) -> str | None:
        """Ask the device about each replacement with a throwaway state, once per SA shape it
        has not taken yet. Returns a refusal text."""
        for _cur, new in changes:
            if new.offload is None or probe_shape(new) in self.accepted:
                continue
            pr = probe_state(new)
            err = self.backend.apply([AddState(pr)])[0]
            if err is not None:
                return err.reason
            got = self.backend.get_state(pr.id)
            self.backend.apply([DelState(pr.id, "delete offload probe state")])
            if got is not None and got.offload is None:
                reason = "device accepted the request but did not offload (no offload support)"
                if not new.offload.packet:
                    self.crypto_refusing[new.offload.ifindex] = reason
                return reason
            self.accepted.add(probe_shape(new))
        return None

    def move(self, cp: pl.ChildPlan, plan: pl.Plan) -> str | None:
        """Move the child's states to the planned offload and set its policies. Returns a refusal text."""
        return self.move_many([cp], plan)[0]

    def move_many(self, cps: list[pl.ChildPlan], plan: pl.Plan) -> list[str | None]:
        """``move`` for several CHILD_SAs, with one read and one write batch for all of them:
        a hub's promotion was three kernel round trips per CHILD_SA (issue 13). A CHILD_SA
        whose objects an earlier one of the list touches too waits for a later batch, so the
        order of writes to one object stays the list's."""
        out: list[str | None] = [None] * len(cps)
        todo = list(range(len(cps)))
        while todo:
            group: list[int] = []
            later: list[int] = []
            seen: set[Any] = set()
            for i in todo:
                keys = _touches(cps[i])
                (later if keys & seen else group).append(i)
                seen |= keys
            for i, err in zip(group, self._move_group([cps[i] for i in group], plan)):
                out[i] = err
            todo = later
        return out

    def _move_group(self, cps: list[pl.ChildPlan], plan: pl.Plan) -> list[str | None]:
        out: list[str | None] = [None] * len(cps)
        steps = [self._steps(cp, plan) for cp in cps]
        for i, (drop, _add, changes) in enumerate(steps):
            refusal = self.probe(changes) if changes else None
            if refusal:
                if drop:
                    log_errors(self.backend.apply(drop), "remove policy")
                    self._forget(drop)
                out[i] = refusal
        # read again just before the swap: counters and sequence numbers moved on (the OUT SAs
        # holding a TX rule a move needs too: they are moved out of the way, see make_room)
        ids = [cur.id for i, (_d, _a, changes) in enumerate(steps) if out[i] is None for cur, _new in changes]
        ids += [h.id for i, (_d, _a, changes) in enumerate(steps) if out[i] is None for _cur, new in changes
                if (h := self.mirror.tx_holder(new)) is not None]
        now_of = {state_key(sid): st for sid, st in zip(ids, self.backend.get_states(ids))}
        ops: list[Op] = []
        segments: list[tuple[int, slice, list[DelPolicy], list[AddPolicy], list[tuple[XfrmState, XfrmState, bool]]]] = []
        for i, (drop, add, changes) in enumerate(steps):
            if out[i] is not None:
                continue
            cp = cps[i]
            fresh: list[tuple[XfrmState, XfrmState, bool]] = []
            for cur, new in changes:
                now = now_of[state_key(cur.id)]
                if now is None:
                    self.mirror.drop_state(cur.id)
                    out[i] = "state disappeared before the move (charon deleted it)"
                    break
                outbound = cp.state_out is not None and cur.id == cp.state_out.id
                if pl.state_matches(now, new.offload):  # moved meanwhile (the rekey follower)
                    self.mirror.put_state(now)
                    continue
                moved = pl.moved_state(now, new.offload, outbound, self.cfg.seq_margin)
                fresh += self.make_room(moved, now_of) + [(now, moved, outbound)]
            if out[i] is not None:
                continue
            # the twin before the states, stale policies after: a packet then meets an agent
            # twin (template without SPI) while the OUT SA is swapped, never charon's policy
            # with no software SA of its SPI (that makes a placeholder of the SPI, see
            # backend.replace_placeholders)
            mine: list[Op] = [*add, *_swap_ops(fresh), *drop]
            segments.append((i, slice(len(ops), len(ops) + len(mine)), drop, add, fresh))
            ops += mine
        errs = self.backend.apply(ops) if ops else []
        for i, part, drop, add, fresh in segments:
            out[i] = self.settle(cps[i].child.key, ops[part], errs[part], drop, add, fresh)
        return out

    def make_room(self, new: XfrmState, now_of: dict[StateKey, XfrmState | None] | None = None) -> list[tuple[XfrmState, XfrmState, bool]]:
        """The move that frees the device TX rule ``new`` needs, if another OUT SA holds it.

        A ConnectX (mlx5 6.12, ipsec_fs.c tx_add_rule) keys that rule on reqid and upper
        protocol, one SA each: a rekey's new OUT SA answers EEXIST while its predecessor is
        offloaded. The predecessor goes back to software in the same batch, just before: charon
        already sends on the new SA (its template names the new SPI) and deletes the old one
        at its delete_rekeyed_delay; nothing selects a software SA beside the twin. ``now_of``:
        fresh reads by state key (else read here)."""
        held = self.mirror.tx_holder(new)
        if held is None:
            return []
        now = now_of.get(state_key(held.id)) if now_of is not None else self.backend.get_state(held.id)
        if now is None or not pl.state_matches(now, held.offload):
            return []  # gone or moved meanwhile: the kernel answers for itself
        return [(now, pl.moved_state(now, None, True, self.cfg.seq_margin), True)]

    def swap(self, child: Key, fresh: list[tuple[XfrmState, XfrmState, bool]]) -> str | None:
        """Move states, each by DELSA+NEWSA, in one batch; record or undo as a move does. Returns a refusal text."""
        ops = _swap_ops(fresh)
        return self.settle(child, ops, self.backend.apply(ops), [], [], fresh)

    def _steps(self, cp: pl.ChildPlan, plan: pl.Plan) -> tuple[list[DelPolicy], list[AddPolicy], list[tuple[XfrmState, XfrmState]]]:
        """What moving ``cp`` takes, as the mirror has its objects: policies to drop and to set, states to replace."""
        target_keys = {pl.policy_key(p) for p in cp.policies}
        drop = [
            DelPolicy(p.id, "remove " + p.describe())
            for p in plan.stale_policies
            if any(t.reqid == cp.child.reqid for t in p.templates) and pl.policy_key(p) not in target_keys
        ]
        # a policy of the same identity whose template or priority differs from the plan (charon
        # changed its own, or an older agent made it) is updated in place: the kernel swaps it
        # atomically, with no moment without a policy
        have = self.mirror.policies
        add = [
            AddPolicy(p, update=pl.policy_key(p) in have)
            for p in cp.policies
            if pl.policy_key(p) not in have or pl.policy_content(have[pl.policy_key(p)]) != pl.policy_content(p)
        ]
        changes = pl.state_changes(cp, self.cfg.seq_margin) if cp.target != pl.KEEP else []
        return drop, add, changes

    def settle(self, child: Key, ops: list[Op], errs: list[XfrmError | None], drop: list[DelPolicy], add: list[AddPolicy],
               fresh: list[tuple[XfrmState, XfrmState, bool]]) -> str | None:
        """Record one CHILD_SA's part of a write batch; undo it if any of its writes failed."""
        self._forget(drop)
        if not any(errs):
            for a in add:
                self.mirror.put_policy(a.policy)
            for _cur, new, outbound in fresh:
                self.mirror.put_state(new)
                if new.offload is not None:
                    self.held.keep(new, child, outbound)
                else:  # back in software (make_room): no copy to restore from a device loss
                    self.held.pop(state_key(new), None)
            return None
        try:
            return self._undo(ops, errs, fresh)
        finally:
            for cur, _new, _outbound in fresh:  # whatever the undo achieved, as the kernel has it
                got = self.backend.get_state(cur.id)
                self.mirror.put_state(got) if got is not None else self.mirror.drop_state(cur.id)

    def _undo(self, ops: list[Op], errs: list[XfrmError | None], changes: list[tuple[XfrmState, XfrmState, bool]]) -> str:
        """Put charon's states back as they were and remove policies added in the failed batch."""
        first = next(e for e in errs if e is not None)
        repair: list[Op] = []
        moved = {new.id: (cur, new, outbound) for cur, new, outbound in changes}
        # the last move first: a rekey's new OUT SA leaves the device TX rule before its
        # predecessor (make_room) takes it back
        for i, (op, err) in reversed(list(enumerate(zip(ops, errs)))):
            if not isinstance(op, AddState):
                continue
            cur, new, outbound = moved[op.state.id]
            if errs[i - 1] is not None:
                # the original could not be removed: if it was already gone (charon deleted it
                # between our read and the batch), a replacement that got in would be an orphan
                if err is None:
                    repair.append(DelState(new.id, "remove replacement of a state charon deleted"))
                continue
            # the replacement may have carried traffic: continue from its counters, never repeat
            live = new if err is None else cur
            back = pl.moved_state(replace(cur, replay=live.replay, replay_esn=live.replay_esn), cur.offload, outbound, self.cfg.seq_margin)
            if err is None:
                repair.append(DelState(new.id, "undo " + new.describe()))
            repair.append(AddState(back))
        # the twins go after the states are back (as in a move, charon's policy is never the
        # one a packet meets while an SA of its SPI is missing from software)
        repair += [DelPolicy(op.policy.id, "undo " + op.policy.describe()) for op, err in zip(ops, errs) if isinstance(op, AddPolicy) and err is None]
        for err in self.backend.apply(repair):
            if err is not None:
                log.error("could not restore after a refused move: %s", err)
        return first.reason

    def _forget(self, drop: list[DelPolicy]) -> None:
        for d in drop:
            self.mirror.drop_policy(d.id)


def _swap_ops(fresh: list[tuple[XfrmState, XfrmState, bool]]) -> list[Op]:
    """DELSA+NEWSA of the same SPI for each (current, replacement): adjacent, so the backend
    sends each pair in one datagram and ``_undo`` finds a NEWSA's DELSA just before it."""
    return [op for cur, new, _ in fresh for op in (DelState(cur.id, "remove " + cur.describe()), AddState(new))]


def _touches(cp: pl.ChildPlan) -> set[Any]:
    """The kernel objects a move of ``cp`` may write: its policies' and its states' identities,
    and its reqid's (the stale policies it drops are found by reqid)."""
    keys: set[Any] = {("policy", pl.policy_key(p)) for p in cp.policies}
    keys.add(("reqid", cp.child.reqid))
    keys |= {("state", state_key(st.id)) for st in (cp.state_in, cp.state_out) if st is not None}
    return keys


def log_errors(errs: list[XfrmError | None], what: str) -> None:
    """Each error but ENOENT (already gone: what the request wanted)."""
    for e in errs:
        if e is not None and e.errno != 2:
            log.warning("%s: %s", what, e)
