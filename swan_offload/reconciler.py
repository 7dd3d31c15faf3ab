"""Apply a plan to the kernel, never losing a CHILD_SA, and record what happened.

The moves themselves (probe, DELSA+NEWSA batch, undo) are mover.py's; device losses and
the copies they need are held.py's; outcomes ledger.py's; the kernel's objects mirror.py's.
This module decides, per CHILD_SA, which of them runs, and what a refusal leads to.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import planner as pl
from .backend import AddPolicy, AddState, Backend, DelPolicy, DelState
from .capability import KernelCaps
from .charon_mirror import CharonMirror, Scope
from .config import Config
from .held import Held, HeldCopies
from .ledger import Key, Ledger, Outcome
from .logs import Tally
from .mirror import KernelMirror
from .model import ChildSA, SaList
from .mover import Mover, log_errors
from .xfrm import constants as c
from .xfrm.counters import SaCounters
from .xfrm.objects import StateId, XfrmState

log = logging.getLogger("swan_offload.reconciler")


def _sa_list(sas: SaList | list[ChildSA]) -> SaList:
    """A plain list of CHILD_SAs (tests, the CLI) as a complete list-sas answer."""
    return sas if isinstance(sas, SaList) else SaList(list(sas))


_UNMOVED = "not moved yet"  # _apply_child: no batched move was made for this CHILD_SA


@dataclass(frozen=True)
class RunStats:
    """What the reconciler has done, for status and metrics."""

    runs: int
    scoped_runs: int  # of which planned one event's IKE_SAs only
    drift_repaired: int
    refusing: dict[int, str]  # ifindex -> why the device refuses packet offload


class Reconciler:
    """Applies plans. The kernel mirror, the ledger and the lock are its collaborators: the
    daemon makes them and keeps its own references (it feeds the mirror from the monitor,
    reads outcomes for status), so it never reaches into the reconciler for them."""

    def __init__(
        self,
        backend: Backend,
        cfg: Config,
        caps: KernelCaps,
        mirror: KernelMirror | None = None,
        ledger: Ledger | None = None,
        lock: threading.RLock | None = None,
        mirror_fed: bool = False,
        between: Callable[[], None] | None = None,
        move_batch: int | None = None,
    ) -> None:
        self.backend = backend
        self.cfg = cfg
        self.caps = caps
        self.ledger = ledger or Ledger()
        self.refusing: dict[int, str] = {}  # ifindex -> why packet offload is refused
        self.refused: dict[Key, str] = {}  # child -> why the device refused its SA
        self.crypto_refused: dict[Key, str] = {}  # the same, for crypto offload
        self.runs = 0
        self.scoped_runs = 0  # of which planned one event's IKE_SAs only
        self.drift_repaired = 0
        self.interrupted = False  # interrupt(): the run in progress stops at its next batch
        # called under the lock before each batch of CHILD_SAs of a run: the daemon applies the kernel's
        # notifications queued meanwhile (a hub's promotion writes 50,000 objects in one run:
        # their notifications overflowed the monitor's inbox, and the reload it then needs
        # cost another full resync right after)
        self.between = between
        # CHILD_SAs moved with one read and one write batch, under one hold of the lock: the
        # rekey follower waits for at most this many moves (~5 writes each); at 64 a hub's
        # promotion makes 1/64 of the kernel round trips it made one CHILD_SA at a time
        self.move_batch = move_batch or cfg.move_batch
        self.last_planned: list[Key] = []  # the CHILD_SAs the last run planned (keys only: a plan of a hub is megabytes)
        # the kernel's objects; ``mirror_fed``: a monitor keeps it current between reconciles
        # (the daemon's); without one every reconcile reloads it from a dump
        self.mirror = mirror or KernelMirror()
        self.mirror_fed = mirror_fed
        # what the monitor thread's follow() shares with a run: the daemon passes its lock;
        # a run takes it per batch of CHILD_SAs, not for all of them
        self.lock: threading.RLock = lock or threading.RLock()
        self.held = HeldCopies()
        self.restored: dict[Key, ChildSA] = {}  # put back in software, not yet rekeyed
        self.used_up: set[Key] = set()  # of those, the ones whose estimate used up the sequence space
        self.restored_ids: dict[Key, list[StateId]] = {}  # what the agent put back, until the CHILD_SA retires
        self.ike_ports: frozenset[int] = frozenset()  # every IKE port charon was seen using
        self.mover = Mover(backend, cfg, self.mirror, self.held)

    @property
    def outcomes(self) -> dict[Key, Outcome]:
        return self.ledger.outcomes

    def stats(self) -> RunStats:
        return RunStats(self.runs, self.scoped_runs, self.drift_repaired, dict(self.refusing))

    def holds_copies(self) -> bool:
        """Whether any offloaded SA's copy is kept (a held-copy refresh has work)."""
        return bool(self.held)

    # ------------------------------------------------------------ reading

    def reload(self) -> dict[tuple[str, Any], str]:
        """Load the kernel mirror from one dump; returns what the mirror had wrong, and how."""
        return self.mirror.load(self.backend.dump_states(), self.backend.dump_policies())

    def view(self) -> pl.KernelView:
        if not (self.mirror_fed and self.mirror.valid):
            self.reload()
        addrs, names = self.backend.devices()
        return pl.KernelView(
            self.mirror.states,
            self.mirror.policies.values(),
            packet_offload=self.caps.packet_offload,
            packet_offload_reason=self.caps.reason,
            addresses=addrs,
            devices=names,
            refusing_devices=dict(self.refusing),
            crypto_refusing=dict(self.mover.crypto_refusing),
            refused_children=dict(self.refused),
            policy_index=self.mirror.index,
            agent_offloaded=self.held.keys(),
        )

    def plan(self, sas: SaList | list[ChildSA]) -> pl.Plan:
        sas = _sa_list(sas)
        return pl.plan(sas.children, self.cfg, self.view(), sas.ikes, self._frozen(sas)[0], self.ike_ports)

    def _frozen(self, sas: SaList, full: bool = False) -> tuple[pl.Frozen, set[tuple[str, int]]]:
        """What of an unreadable list-sas entry stays as it is: policies by reqid, and the
        CHILD_SAs last seen under that IKE_SA (not retired, copies kept).

        In a ``full`` run with an entry charon could not send whole (vici_source.VICI_MESSAGE_MAX),
        the reqids of charon's policies that no listed CHILD_SA holds stay too: such an entry
        hides CHILD_SAs the agent never saw, after a restart all of them. Their policies are
        the only sign of them; a CHILD_SA charon deleted has none left, so its twins still go."""
        if sas.complete:
            return pl.Frozen(), set()
        keys: set[tuple[str, int]] = set()
        reqids: set[int] = set()
        for (name, ike_id), salvaged in sas.unreadable.items():
            reqids |= salvaged
            mine = self.ledger.of_ikes((ike_id,)) if ike_id is not None else set(self.outcomes)
            for k in mine:
                o = self.outcomes[k]
                if o.ike == name and ike_id in (None, o.ike_uniqueid):
                    keys.add(k)
                    reqids.add(o.reqid)
        if full and sas.discarded:
            listed = {ch.reqid for ch in sas.children}
            reqids |= {t.reqid for p in self.mirror.policies.values() if not pl.is_agent_policy(p) for t in p.templates} - listed
        if sas.unnamed:
            keys = set(self.outcomes)
        return pl.Frozen(frozenset(reqids), everything=bool(sas.unnamed), active=True), keys

    # ------------------------------------------------------------ applying

    def reconcile(self, sas: SaList | list[ChildSA]) -> pl.Plan:
        """Bring the kernel to the plan for charon's SAs; returns the plan that was applied.

        A list-sas entry that did not parse changes nothing of its IKE_SA: only a CHILD_SA
        that a readable entry no longer lists is retired.
        """
        with self.ledger.summarised():  # a hub's run logs a screen, not a line per CHILD_SA
            sas = _sa_list(sas)
            with self.lock:
                self.runs += 1
                view = self.view()
                self.mirror.take_touched()  # all is planned
                self._note_devices(view)
                if self._restore(sas.children, view):
                    view = self.view()
            plan = self._run(sas, view, None)
            with self.lock:
                live = {cp.child.key for cp in plan.children} | self._frozen(sas)[1]
                self._retire({k for k in self.outcomes if k not in live} | {h.child for h in self.held.values() if h.child not in live})
                for memo in (self.refused, self.crypto_refused):
                    for k in [k for k in memo if k not in live]:
                        del memo[k]
                self.ledger.forget_announced(live)
            return plan

    def reconcile_scope(self, charon: CharonMirror, scope: Scope) -> pl.Plan:
        """Plan and apply what ``scope`` names only (an event's IKE_SAs or CHILD_SAs), from the
        mirrors: the work of an event is its own, whatever else the hub holds. The scope grows
        to every CHILD_SA sharing a reqid with it, or a policy overlapping one of its OUT
        policies, as the planner decides those together."""
        with self.ledger.summarised():
            self.runs += 1
            self.scoped_runs += 1
            view = self.view()
            uids = {u for _i, u in scope.children}
            mine = self.ledger.of_ikes(scope.ikes) | self.ledger.of_uids(uids)
            keys = charon.keys_of(scope) | mine
            keys = self._closure(charon, keys, view)
            mine |= {k for k in keys if k in self.outcomes}
            sas = charon.sa_list(keys, scope.ikes)
            reqids = {ch.reqid for ch in sas.children} | {self.outcomes[k].reqid for k in mine}
            packet_reqids, names = self.ledger.packet_outside(mine)
            devices = frozenset(d for n in names if (d := view.devices.get(n)) is not None)
            had = {o.device for k in mine if (o := self.outcomes[k]).mode == pl.PACKET and o.device}
            plan = self._run(sas, view, pl.Scope(frozenset(reqids), packet_reqids, devices))
            live = {cp.child.key for cp in plan.children} | self._frozen(sas)[1]
            gone = mine - live
            self._retire(gone)
            for memo in (self.refused, self.crypto_refused):
                for k in gone:
                    memo.pop(k, None)
            idle = had - self.ledger.packet_outside(())[1]
            if idle and not self._frozen(sas)[0].active:
                self._retire_bypasses({view.devices[n].ifindex for n in idle if n in view.devices})
            return plan

    def _closure(self, charon: CharonMirror, keys: set[Key], view: pl.KernelView) -> set[Key]:
        """``keys`` and every CHILD_SA a plan of them depends on, transitively."""
        todo = set(keys)
        while todo:
            reqids = {charon.children[k].reqid for k in todo if k in charon.children}
            reqids |= {self.outcomes[k].reqid for k in todo if k in self.outcomes}
            for r in list(reqids):
                for sw in view.index.charon(r):
                    if sw.dir == c.XFRM_POLICY_OUT:
                        reqids |= {t.reqid for q in view.index.overlapping(sw) for t in q.templates}
            todo = charon.with_reqids(reqids) - keys
            keys |= todo
        return keys

    def _retire_bypasses(self, ifindexes: set[int]) -> None:
        """The IKE bypasses of devices that no longer carry a CHILD_SA in packet offload, nor an
        agent twin (one kept for a rekey's successor still on its way)."""
        mine = [p for p in self.mirror.policies.values() if pl.is_agent_policy(p) and p.offload is not None]
        ifindexes = ifindexes - {p.offload.ifindex for p in mine if p.templates and p.offload}
        stale = [DelPolicy(p.id, "remove " + p.describe()) for p in mine if not p.templates and p.offload and p.offload.ifindex in ifindexes]
        self._drop_policies(stale)

    def _drop_policies(self, stale: list[DelPolicy]) -> None:
        for gone, err in zip(stale, self.backend.apply(stale)):
            log_errors([err], "remove stale policy")
            self.mirror.drop_policy(gone.id)
            self.ledger.say("agent policies retired", "retired %s", gone.what.removeprefix("remove "))
        self.drift_repaired += len(stale)

    def _run(self, sas: SaList, view: pl.KernelView, scope: pl.Scope | None) -> pl.Plan:
        """Plan ``sas`` (everything, or a scope) against ``view`` and apply it, taking
        ``self.lock`` per batch of ``move_batch`` CHILD_SAs: the rekey follower never waits
        for a whole hub's run."""
        children = sas.children
        with self.lock:
            frozen, _kept = self._frozen(sas, full=scope is None)
            self.ike_ports |= pl.charon_ports(sas.ikes, children)
            plan = pl.plan(children, self.cfg, view, sas.ikes, frozen, self.ike_ports, scope)
            if plan.stale_states:
                probes = [DelState(s.id, "remove leftover " + s.describe()) for s in plan.stale_states]
                log_errors(self.backend.apply(probes), "remove leftover probe state")
                for d in probes:
                    self.mirror.drop_state(d.id)
                log.info("removed %d probe state(s) left by an earlier run", len(probes))
                self.drift_repaired += len(probes)
            if self._ensure_bypasses(plan):
                # a device refused: its children go to their fallbacks
                plan = pl.plan(children, self.cfg, replace(view, refusing_devices=dict(self.refusing)), sas.ikes, frozen, self.ike_ports, scope)
            losses = self.held.loss_count()
            self.interrupted = False
        for i in range(0, len(plan.children), self.move_batch):
            with self.lock:
                if self.between is not None:
                    self.between()
                if self.interrupted or self.held.loss_count() != losses:
                    # a link event restored what a device took (daemon: link monitor thread); the
                    # rest of this plan was made for that device: the full resync that follows replans
                    log.info("a device went down during this run: %d CHILD_SA(s) left to the resync that follows", len(plan.children) - i)
                    return plan
                self._apply_children(plan.children[i : i + self.move_batch], plan)
        with self.lock:
            planned = {cp.child.reqid for cp in plan.children if cp.target != pl.PENDING}
            # stale policies of a planned child were removed in that child's own batch
            stale = [
                DelPolicy(p.id, "remove " + p.describe())
                for p in plan.stale_policies
                if not (p.templates and all(t.reqid in planned for t in p.templates))
            ]
            self._drop_policies(stale)
            self._hold(plan)
            self.last_planned = [cp.child.key for cp in plan.children]
        return plan

    def _retire(self, keys: set[Key]) -> None:
        """CHILD_SAs charon no longer lists: their records and copies go, and SAs the agent
        restored for them (charon deletes its own first: what is left is the agent's orphan,
        restored from a mirror that did not know yet)."""
        if not keys:
            return
        self.held.forget(keys)
        self.ledger.retire(keys)
        orphans = [DelState(sid, "remove restored state of a CHILD_SA charon deleted") for k in keys for sid in self.restored_ids.pop(k, [])]
        for d, err in zip(orphans, self.backend.apply(orphans)):
            if err is None:
                self.mirror.drop_state(d.id)
                self.ledger.say("restored states of deleted CHILD_SAs removed", "removed %s", d.what.removeprefix("remove "))
            elif err.errno not in (errno.ESRCH, errno.ENOENT):
                log.warning("%s: %s", d.what, err)

    # ------------------------------------------------------------ device loss

    def interrupt(self) -> None:
        """From another thread, before it takes the lock (a device loss to restore): the run in
        progress stops at its next batch of CHILD_SAs, so the lock is not handed back and forth for a
        whole hub before the restore gets it."""
        self.interrupted = True

    def link_changed(self, ifindex: int, up: bool) -> bool:
        """A link event: a device that goes down has lost everything offloaded to it, which
        the kernel flushed without a notification (the mirror cannot know what). True when
        that newly changed what the ledger says."""
        lost = self.held.link_changed(ifindex, up)
        if lost:
            self.mover.device_lost(ifindex)
            self.ledger.device_lost({h.child for h in self.held.values() if h.state.offload and h.state.offload.ifindex == ifindex})
        if not up and self.mirror_fed:
            self.mirror.invalidate(f"device #{ifindex} went down")
        return lost

    def _note_devices(self, view: pl.KernelView) -> None:
        """The dump's view of devices, for losses no link event reported (down, or gone)."""
        present = {d.ifindex: d for d in view.devices.values()}
        for ifindex in self.held.devices():
            dev = present.get(ifindex)
            self.link_changed(ifindex, dev is not None and dev.up)

    def _hold(self, plan: pl.Plan) -> None:
        """Refresh the copies of offloaded states from this run's dump (the device's counters)."""
        for cp in plan.children:
            done = self.outcomes.get(cp.child.key)
            if done is not None and done.mode in (pl.PACKET, pl.CRYPTO):
                self._hold_child(cp)

    def _hold_child(self, cp: pl.ChildPlan) -> None:
        """Copies of a CHILD_SA's offloaded states, taken as soon as they are moved: a device
        lost later in the same run (minutes at a hub) is restored from them too."""
        for st, outbound in ((cp.state_out, True), (cp.state_in, False)):
            if st is not None and st.offload is not None:
                self.held.keep(st, cp.child.key, outbound)

    def refresh_held(self, states: list[SaCounters] | None = None, read_at: float | None = None) -> int:
        """Read the device's sequence numbers and counters of every held SA (one lean dump).

        ``states`` is a dump taken at ``read_at`` by the caller (on another socket, so the
        daemon need not hold its lock while the kernel answers); without it, dump here.
        Only counters and replay state are read (xfrm/counters.py): the copy keeps the keys
        it was taken with, which an SA never changes.

        A device loss restores from the latest read, jumping ahead by what the rate seen
        between reads could have sent since: reads only at reconciles (seconds or minutes
        apart, at whatever rate traffic had then) let a stream that started since be
        numbered twice, which reuses GCM nonces and makes the peer drop it as replays.
        Returns how many copies were refreshed.
        """
        if not self.held:
            return 0
        if states is None:
            states, read_at = self.backend.dump_counters(), time.monotonic()
        return self.held.refresh(states, time.monotonic() if read_at is None else read_at)

    def follow(self, st: XfrmState) -> bool:
        """Offload at once a software SA charon just added beside an offloaded one of the same shape.

        That is a rekey of a CHILD_SA already in hardware. Until it is moved, the 6.12 kernel
        cannot find the offloaded SAs of that reqid: it puts a software SA at the head of a
        hash bucket that holds only offloaded SAs, and its offloaded lookup stops at the first
        software SA. Waiting for list-sas would keep that window open far longer.
        The full reconcile that follows finds the SA moved; the policies need no change (their
        templates name no SPI).
        """
        if st.offload is not None or st.proto != c.IPPROTO_ESP:
            return False
        shape = pl.sa_shape(st)
        twin = next((h for h in self.held.values() if pl.sa_shape(h.state) == shape and self._offloaded(h)), None)
        if twin is None:
            return False
        assert twin.state.offload is not None
        # the notification may be old: a reconcile may have moved the SA since (moving it again
        # from the notification's copy would repeat its sequence numbers), or charon deleted it
        now = self.backend.get_state(st.id)
        if now is None or now.offload is not None:
            return False
        st = now
        new = pl.moved_state(st, twin.state.offload, twin.outbound, self.cfg.seq_margin)
        # refused, charon's SA goes back as it was (the mover's undo) and the full reconcile decides
        if self.mover.swap(twin.child, self.mover.make_room(new) + [(st, new, twin.outbound)]) is not None:
            return False
        self.ledger.followed[st.spi] = time.time()
        log.info("reqid %d: new %s offloaded on arrival (a rekey of an offloaded CHILD_SA)", st.reqid, new.describe())
        return True

    def _offloaded(self, h: Held) -> bool:
        done = self.outcomes.get(h.child)
        return done is not None and done.mode == pl.PACKET and h.state.offload is not None and h.state.offload.ifindex not in self.held.down

    def restore_now(self, children: Iterable[ChildSA]) -> bool:
        """Right after a link event says a device went down: put back in software what it took,
        for the CHILD_SAs charon is known to use (the charon mirror), without waiting for a
        list-sas and a dump (seconds at a hub). A state the kernel still holds answers EEXIST
        and stays as it is; one charon deleted meanwhile goes when its CHILD_SA retires."""
        return self._restore(list(children), None)

    def _restore(self, children: list[ChildSA], view: pl.KernelView | None) -> bool:
        """Put back in software every held SA a device loss took while charon still uses it
        (``view``: the kernel as read, to skip what is there; None: the kernel says, EEXIST)."""
        live = {ch.key: ch for ch in children if ch.state in ("INSTALLED", "")}
        todo = self.held.lost(set(live), view.states if view else {}, self.cfg.seq_margin, self.cfg.restore_max_pps)
        errs = self.backend.apply([AddState(new) for _k, _h, new, _j in todo])
        said = Tally(log, level=logging.WARNING)  # 20,000 lines at a hub's flap: ten, and counts
        for (k, h, new, jump), err in zip(todo, errs):
            if err is not None and err.errno == errno.EEXIST:
                continue  # there after all (added after the device's flush): not lost
            del self.held[k]
            ch = live[h.child]
            if err is not None:
                log.error("%s: could not restore %s after its device went down: %s", ch.label, new.describe(), err.reason)
                continue
            self.mirror.put_state(new)
            self.restored[ch.key] = ch
            self.restored_ids.setdefault(ch.key, []).append(new.id)
            self.drift_repaired += 1
            dev = h.state.offload.ifindex if h.state.offload else 0
            group = f"SAs restored in software after device #{dev} went down"
            used_up = h.outbound and pl.sequence_used_up(new)
            if used_up:
                # no ESN: the estimate ran past 2^32 - 1; repeating a number would reuse a GCM
                # nonce, so the SA sends nothing until charon's rekey (asked for first)
                self.used_up.add(ch.key)
                group += ", whose estimate used up their 32-bit sequence space (no ESN): they send nothing until charon rekeys them"
            if not said.naming():
                said.count(group)  # no line to build
                continue
            seq = f" (outbound sequence advanced by {jump})" if h.outbound else ""
            if used_up:
                seq += ": that reached the end of its 32-bit sequence space (no ESN), it sends nothing until charon rekeys it"
            said.info(group, "%s reqid %d: restored %s in software after device #%d went down%s", ch.label, ch.reqid, new.describe(), dev, seq)
        said.close()
        return bool(todo)

    def take_restored(self) -> list[ChildSA]:
        """Children restored since the last call (their sequence numbers were estimated), those
        whose estimate used up a 32-bit sequence space first."""
        out, self.restored = list(self.restored.values()), {}
        out.sort(key=lambda ch: ch.key not in self.used_up)  # those that cannot send first
        self.used_up.clear()
        return out

    def _ensure_bypasses(self, plan: pl.Plan) -> bool:
        """Install missing IKE bypasses; a device that refuses them is remembered. True if one did."""
        missing = [p for p in plan.bypasses if pl.policy_key(p) not in self.mirror.policies]
        refused = False
        for p, err in zip(missing, self.backend.apply([AddPolicy(p) for p in missing])):
            if err is None:
                self.mirror.put_policy(p)
                log.info("installed IKE bypass %s", p.describe())
                continue
            assert p.offload is not None
            if p.offload.ifindex not in self.refusing:
                log.warning("device #%d refuses packet offload: %s", p.offload.ifindex, err.reason)
            self.refusing[p.offload.ifindex] = f"device refuses packet-offloaded policies: {err.reason}"
            refused = True
        return refused

    def _apply_children(self, cps: Sequence[pl.ChildPlan], plan: pl.Plan) -> None:
        """Each CHILD_SA's plan; the moves to packet offload in one batch (Mover.move_many)."""
        moving = [cp for cp in cps if cp.target == pl.PACKET]
        moved = dict(zip(map(id, moving), self.mover.move_many(moving, plan)))
        for cp in cps:
            self._apply_child(cp, plan, moved.get(id(cp), _UNMOVED))

    def _apply_child(self, cp: pl.ChildPlan, plan: pl.Plan, moved: str | None = _UNMOVED) -> None:
        """``moved``: the result of this CHILD_SA's move to packet offload, if made already."""
        if cp.target == pl.PENDING and cp.child.key in self.outcomes and cp.state_in and cp.state_out:
            return  # being rekeyed or deleted: its SAs are still where the last decision put them
        if cp.target in (pl.OFF, pl.NATIVE, pl.PENDING, pl.KEEP):
            self.ledger.record(cp, cp.target, cp.reason)
            return
        if cp.target == pl.PACKET:
            # a refusal is remembered for this CHILD_SA (the planner reads the memo): probing
            # again would only repeat it
            err = self.mover.move(cp, plan) if moved is _UNMOVED else moved
            if err is None:
                self.ledger.record(cp, pl.PACKET, "")
                self._hold_child(cp)
                return
            self.refused[cp.child.key] = err
            cp = cp.fallback(f"packet offload refused: {err}", pl.DEVICE_REFUSED)
            log.warning("%s reqid %d: %s; fallback %s", cp.child.label, cp.child.reqid, cp.reason, cp.target)
            if cp.target == pl.KEEP:
                self.mover.move(cp, plan)  # only drops agent policies
                self.ledger.record(cp, pl.KEEP, cp.reason)
                return
        if cp.target == pl.CRYPTO:
            err = self.crypto_refused.get(cp.child.key) or self.mover.move(cp, plan)
            if err is None:
                self.ledger.record(cp, pl.CRYPTO, cp.reason)
                self._hold_child(cp)
                return
            self.crypto_refused[cp.child.key] = err
            # a crypto offload that was configured and refused is the device's doing; any other
            # first cause (packet refused, no packet offload in the kernel, ...) stays the cause
            cause = pl.DEVICE_REFUSED if cp.cause == pl.CONFIGURED else cp.cause
            cp = replace(cp, target=pl.SOFTWARE, reason=f"{cp.reason}; crypto offload refused: {err}", cause=cause)
        err = self.mover.move(cp, plan)
        self.ledger.record(cp, pl.SOFTWARE if err is None else pl.KEEP, cp.reason if err is None else f"{cp.reason}; {err}")
