"""What the agent decided for each CHILD_SA, and how long promotions took: status and
metrics read this, never the kernel.

Indexed by IKE_SA and by what is in packet offload, so that planning one event's IKE_SAs
learns what the rest contributes (reqids and devices in packet offload) without a pass over
every CHILD_SA (issue 13).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from . import planner as pl
from .logs import Tally

log = logging.getLogger("swan_offload.reconciler")

Key = tuple[str, int]  # (IKE_SA name, CHILD_SA uniqueid): charon's identity of a CHILD_SA
MAX_LATENCIES = 10000  # unscraped promotion latencies kept, at most


@dataclass(slots=True)
class Outcome:
    """What the agent last did for one CHILD_SA."""

    label: str
    ike: str
    child: str
    uniqueid: int
    reqid: int
    spi_in: int
    spi_out: int
    mode: str  # packet | crypto | software | keep | off | native | pending
    device: str | None
    reason: str
    cause: str = ""  # the reason's class (planner.CAUSES): bounded, for metric labels
    since: float = field(default_factory=time.time)
    installed: float = 0.0  # wall clock when charon installed it (0: unknown)
    ike_uniqueid: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ike": self.ike,
            "child": self.child,
            "uniqueid": self.uniqueid,
            "ike_uniqueid": self.ike_uniqueid,
            "reqid": self.reqid,
            "spi_in": f"{self.spi_in:08x}",
            "spi_out": f"{self.spi_out:08x}",
            "mode": self.mode,
            "device": self.device,
            "reason": self.reason,
            "cause": self.cause,
            "since": round(self.since, 3),
        }


def _count(counter: Counter[Any], k: Any, sign: int) -> None:
    counter[k] += sign
    if counter[k] <= 0:
        del counter[k]


class _Outside:
    """``reqid in x``: some CHILD_SA outside the scope has it in packet offload."""

    def __init__(self, total: Counter[int], inside: Counter[int]) -> None:
        self.total, self.inside = total, inside

    def __contains__(self, reqid: object) -> bool:
        return isinstance(reqid, int) and self.total.get(reqid, 0) > self.inside.get(reqid, 0)


class Ledger:
    def __init__(self) -> None:
        self.outcomes: dict[Key, Outcome] = {}
        self.decisions: Counter[tuple[str, str]] = Counter()  # (outcome, cause) -> times decided
        self.latencies: list[float] = []  # charon's event to offloaded, not yet scraped
        # promotion latency runs from charon's event (wall clock, kept by the daemon) to the SAs
        # being offloaded; SAs offloaded on arrival (follow) end it there, not at the reconcile
        self.announced: dict[Key, float] = {}
        self.followed: dict[int, float] = {}  # SPI -> when it was offloaded on arrival
        self.started = time.time()
        self._by_ike: dict[int, set[Key]] = defaultdict(set)
        self._by_uid: dict[int, Key] = {}  # CHILD_SA uniqueid -> key
        self._packet_reqids: Counter[int] = Counter()  # CHILD_SAs in packet offload by reqid
        self._packet_devices: Counter[str] = Counter()  # ... and by device
        self.tally: Tally | None = None  # within summarised(): lines past the first counted

    def announce(self, key: Key, at: float) -> None:
        self.announced.setdefault(key, at)

    def take_latencies(self) -> list[float]:
        out, self.latencies = self.latencies, []
        return out

    # ------------------------------------------------------------ indexes

    def of_ikes(self, ike_ids: Iterable[int]) -> set[Key]:
        out: set[Key] = set()
        for i in ike_ids:
            out |= self._by_ike.get(i, set())
        return out

    def of_uids(self, uids: Iterable[int]) -> set[Key]:
        return {self._by_uid[u] for u in uids if u in self._by_uid}

    def packet_outside(self, keys: Iterable[Key]) -> tuple[Container[int], frozenset[str]]:
        """(reqids, device names) in packet offload for CHILD_SAs not in ``keys``, in time
        proportional to those: the reqids as a set-like view of the totals less theirs."""
        inside_r: Counter[int] = Counter()
        inside_d: Counter[str] = Counter()
        for k in keys:
            o = self.outcomes.get(k)
            if o is not None and o.mode == pl.PACKET:
                inside_r[o.reqid] += 1
                inside_d[o.device or ""] += 1
        devices = frozenset(d for d, n in self._packet_devices.items() if n > inside_d[d])
        return _Outside(self._packet_reqids, inside_r), devices

    def _index(self, o: Outcome, sign: int) -> None:
        k = (o.ike, o.uniqueid)
        if sign > 0:
            self._by_ike[o.ike_uniqueid].add(k)
            self._by_uid[o.uniqueid] = k
        else:
            self._by_uid.pop(o.uniqueid, None)
            keys = self._by_ike.get(o.ike_uniqueid)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del self._by_ike[o.ike_uniqueid]
        if o.mode == pl.PACKET:
            _count(self._packet_reqids, o.reqid, sign)
            _count(self._packet_devices, o.device or "", sign)

    def _set(self, key: Key, o: Outcome) -> None:
        prev = self.outcomes.get(key)
        if prev is not None:
            self._index(prev, -1)
        self.outcomes[key] = o
        self._index(o, +1)

    def retire(self, keys: Iterable[Key]) -> None:
        """CHILD_SAs charon no longer lists."""
        for k in keys:
            gone = self.outcomes.pop(k, None)
            self.announced.pop(k, None)
            if gone is None:
                continue
            self._index(gone, -1)
            self.say("CHILD_SA(s) retired", "%s reqid %d: retired (charon no longer lists it; it was %s)", gone.label, gone.reqid, gone.mode)

    def device_lost(self, keys: Iterable[Key]) -> None:
        """CHILD_SAs whose offloaded SAs went with a device that went down: software, with the
        plan's words, at once (their SAs are restored from the agent's copies), so that status never
        says packet for an SA the device no longer holds while the resync that replans them
        runs (minutes at a hub)."""
        now = time.time()
        for k in keys:
            o = self.outcomes.get(k)
            if o is None or o.mode not in (pl.PACKET, pl.CRYPTO):
                continue
            self._set(k, replace(o, mode=pl.SOFTWARE, device=None, reason=pl.device_down(o.device), cause=pl.DEVICE_DOWN, since=now))
            self.decisions[pl.SOFTWARE, pl.DEVICE_DOWN] += 1

    def forget_announced(self, live: set[Key]) -> None:
        """Announcements of CHILD_SAs that never showed up (a full resync knows)."""
        for k in [k for k in self.announced if k not in live]:
            del self.announced[k]
        old = time.time() - 60  # an SA offloaded on arrival whose CHILD_SA never showed up
        self.followed = {spi: t for spi, t in self.followed.items() if t > old}

    # ------------------------------------------------------------ recording

    def record(self, cp: pl.ChildPlan, mode: str, reason: str) -> None:
        ch = cp.child
        prev = self.outcomes.get(ch.key)
        dev = cp.device.name if cp.device and mode in (pl.PACKET, pl.CRYPTO) else None
        if prev and (prev.mode, prev.device, prev.reason) == (mode, dev, reason):
            return
        now = time.time()
        installed = now - ch.install_time if ch.install_time else 0.0
        self._set(ch.key, Outcome(ch.label, ch.ike_name, ch.name, ch.uniqueid, ch.reqid, ch.spi_in, ch.spi_out, mode, dev, reason, cp.cause, now, installed, ch.ike_uniqueid))
        if mode != pl.PENDING:
            self.decisions[mode, cp.cause] += 1
        promoted = mode in (pl.PACKET, pl.CRYPTO) and (prev is None or prev.mode not in (pl.PACKET, pl.CRYPTO))
        if promoted and len(self.latencies) < MAX_LATENCIES:
            # from charon's event; without one, from the install time (1 s resolution), but only for
            # a CHILD_SA installed since this process started: older ones were no promotion of ours
            start = self.announced.pop(ch.key, None) or (installed if installed >= self.started else None)
            done = [self.followed.pop(spi, 0.0) for spi in (ch.spi_in, ch.spi_out)]
            end = max(done) if all(done) else now
            if start is not None:
                self.latencies.append(max(0.0, end - start))
        if mode in (pl.PACKET, pl.CRYPTO):
            self.say(f"CHILD_SA(s) in {mode} offload on {dev}", "%s reqid %d: %s offload on %s%s", ch.label, ch.reqid, mode, dev, f" ({reason})" if reason else "")
        elif mode != pl.PENDING:
            self.say(f"CHILD_SA(s) {mode} ({cp.cause or 'no cause'})", "%s reqid %d: %s%s", ch.label, ch.reqid, mode, f": {reason}" if reason else "")

    @contextmanager
    def summarised(self) -> Iterator[None]:
        """Within: the first decisions and retirements are logged one by one, the rest counted
        (logs.Tally): a restart at 10,000 CHILD_SAs logs a screen, not 10,000 lines."""
        mine = None
        if self.tally is None:  # nested: the outer run summarises
            mine = self.tally = Tally(log)
        try:
            yield
        finally:
            if mine is not None:
                self.tally = None
                mine.close()

    def say(self, group: str, msg: str, *args: object) -> None:
        """An INFO line about one object: within summarised(), past the first ten, counted."""
        if self.tally is None:
            log.info(msg, *args)
        else:
            self.tally.info(group, msg, *args)
