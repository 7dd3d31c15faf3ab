"""The agent's copies of the states it offloaded, and the device losses that need them.

A device going down takes its offloaded SAs with it (the kernel flushes them without a
notification); charon still uses them. A copy, keys included (memory only, never logged),
is what goes back into the kernel in software. Its outbound sequence number is only as
fresh as its last read, so a restore skips what the device could have sent since.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

from . import planner as pl
from .xfrm.counters import SaCounters
from .xfrm.objects import XfrmState

log = logging.getLogger("swan_offload.reconciler")

StateKey = tuple[str, int, int]
Key = tuple[str, int]


@dataclass(slots=True)
class Held:
    """One copy; ``epoch`` is the device's loss count when it was taken."""

    state: XfrmState
    child: Key
    outbound: bool
    epoch: int
    read_at: float
    rate: float = 0.0  # outbound packets per second between the last two reads


class HeldCopies(dict[StateKey, Held]):
    """Copies by (daddr, spi, proto), with each device's losses."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: dict[int, int] = {}  # ifindex -> times seen going down
        self.down: set[int] = set()
        self.lost_at: dict[int, float] = {}  # ifindex -> when it was last seen going down

    def keep(self, st: XfrmState, child: Key, outbound: bool, read_at: float | None = None) -> bool:
        """Hold ``st`` as read at ``read_at`` (now if None); False for a read older than the copy
        held, or one whose keys are not whole (it could never be restored: the kernel refuses it,
        as a 10,000 stand-in run's restore was refused once, "Invalid AEAD attribute length")."""
        assert st.offload is not None
        short = _short_keys(st)
        if short:
            log.error("not holding a copy of %s: %s; the copy held before stays", st.describe(), short)
            return False
        k = (st.daddr, st.spi, st.proto)
        prev, now = self.get(k), time.monotonic() if read_at is None else read_at
        if prev and now < prev.read_at:
            return False
        rate = prev.rate if prev else 0.0
        if prev and outbound and now > prev.read_at:
            rate = max(0.0, (pl.out_seq(st) - pl.out_seq(prev.state)) / (now - prev.read_at))
        self[k] = Held(st, child, outbound, self.losses.get(st.offload.ifindex, 0), now, rate)
        return True

    def refresh(self, states: list[SaCounters], at: float) -> int:
        """The device's sequence numbers and counters of every copy, from one lean dump taken
        at ``at`` (xfrm/counters.py: no keys; a copy keeps the keys it was taken with, which
        an SA never changes). Returns how many copies were refreshed."""
        now = {(s.daddr, s.spi, s.proto): s for s in states if s.offload is not None}
        fresh = 0
        for k, h in list(self.items()):
            cnt = now.get(k)
            if cnt is None or cnt.offload != h.state.offload or at < h.read_at:
                continue
            old = h.state
            if (cnt.replay, cnt.replay_esn, cnt.curlft, cnt.stats) == (old.replay, old.replay_esn, old.curlft, old.stats):
                h.read_at, h.rate = at, 0.0  # nothing moved (an idle SA): the copy is current as it is
                fresh += 1
                continue
            st = replace(old, curlft=cnt.curlft, stats=cnt.stats, replay=cnt.replay, replay_esn=cnt.replay_esn)
            if self.keep(st, h.child, h.outbound, at):
                fresh += 1
        return fresh

    def link_changed(self, ifindex: int, up: bool) -> bool:
        """A link event; True when the device newly went down (it lost everything offloaded to it)."""
        if up:
            self.down.discard(ifindex)
            return False
        if ifindex in self.down:
            return False
        self.down.add(ifindex)
        self.lost_at[ifindex] = time.monotonic()  # the device sent nothing after this
        self.losses[ifindex] = self.losses.get(ifindex, 0) + 1
        if any(h.state.offload and h.state.offload.ifindex == ifindex for h in self.values()):
            log.warning("device #%d went down: the kernel dropped the SAs and policies offloaded to it", ifindex)
        return True

    def loss_count(self) -> int:
        """Device losses seen so far, all devices: a run that sees it change stops."""
        return sum(self.losses.values())

    def devices(self) -> set[int]:
        """The devices copies are offloaded to, and those seen down."""
        return {h.state.offload.ifindex for h in self.values() if h.state.offload} | set(self.down)

    def lost(self, live: set[Key], present: dict[StateKey, XfrmState], seq_margin: int, max_pps: int) -> list[tuple[StateKey, Held, XfrmState, int]]:
        """(key, copy, its software replacement, the outbound jump) of every copy a device loss
        took while charon still uses it (``live``) and the kernel lacks (``present``)."""
        todo = []
        for k, h in self.items():
            assert h.state.offload is not None
            if h.child not in live or k in present or self.losses.get(h.state.offload.ifindex, 0) <= h.epoch:
                continue  # charon removed it, it is still there, or no device loss explains its absence
            # the device's last sequence number went with it: skip what it could have sent since the
            # last read. Not what it was seen sending: an SA moved or started while traffic ran has
            # no rate yet (in the lab the device sent 14 packets in the 0.7 s between a move and the
            # loss, and the restored SA repeated 6 of them). At most max_pps, until the loss.
            until = min(time.monotonic(), self.lost_at.get(h.state.offload.ifindex, math.inf))
            bound = max(2 * h.rate, float(max_pps))
            jump = seq_margin + math.ceil(bound * max(0.0, until - h.read_at)) if h.outbound else 0
            todo.append((k, h, pl.moved_state(h.state, None, h.outbound, jump), jump))
        return todo

    def forget(self, children: set[Key]) -> None:
        for k in [k for k, h in self.items() if h.child in children]:
            del self[k]


def _short_keys(st: XfrmState) -> str:
    """What of the state's algorithms has fewer key bytes than its key length says (lengths only)."""
    bad = [f"{kind} {a.name} has {len(a.key)} key bytes for {a.key_bits} bits"
           for kind, a in (("aead", st.aead), ("crypt", st.crypt), ("auth", st.auth)) if a is not None and 8 * len(a.key) < a.key_bits]
    return ", ".join(bad)
