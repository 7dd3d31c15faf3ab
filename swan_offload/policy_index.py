"""The kernel's policies indexed: by reqid, and by destination for overlaps.

A hub holds thousands of policies. Planning scanned all of them for every CHILD_SA (its
reqid's policies) and again for every policy (which ones it overlaps): O(N^2). Indexed, both
are answered in time proportional to the answer; ``add`` and ``remove`` keep the index of the
kernel mirror (mirror.py) current one notification at a time, so no event rebuilds it.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from .xfrm import constants as c
from .xfrm.objects import XfrmPolicy


def _net(addr: str, plen: int) -> tuple[int, int, int]:
    """(first address as int, prefix length, bits of the family), host bits cleared."""
    ip = ipaddress.ip_address(addr)
    bits = ip.max_prefixlen
    plen = min(plen, bits)
    mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return int(ip) & mask, plen, bits


class _ByDestination:
    """Policies of one (dir, mark, if_id, family), found by overlap of their destination network."""

    def __init__(self) -> None:
        self.exact: dict[tuple[int, int], list[XfrmPolicy]] = defaultdict(list)
        self.starts: list[int] = []
        self.spans: list[tuple[int, int, XfrmPolicy]] = []  # (start, prefix length, policy), by start
        self.sealed = False

    def add(self, p: XfrmPolicy) -> None:
        start, plen, _bits = _net(p.sel.daddr, p.sel.prefixlen_d)
        self.exact[start, plen].append(p)
        if not self.sealed:
            self.spans.append((start, plen, p))
            return
        i = bisect.bisect_right(self.starts, start)
        self.starts.insert(i, start)
        self.spans.insert(i, (start, plen, p))

    def remove(self, p: XfrmPolicy) -> None:
        start, plen, _bits = _net(p.sel.daddr, p.sel.prefixlen_d)
        _drop(self.exact.get((start, plen)), p)
        if not self.exact.get((start, plen), True):
            del self.exact[start, plen]
        lo, hi = bisect.bisect_left(self.starts, start), bisect.bisect_right(self.starts, start)
        for i in range(lo, hi):
            if self.spans[i][2] is p:
                del self.spans[i], self.starts[i]
                return

    def seal(self) -> None:
        self.spans.sort(key=lambda x: x[0])
        self.starts = [s for s, _p, _q in self.spans]
        self.sealed = True

    def overlapping(self, daddr: str, prefixlen: int) -> Iterator[XfrmPolicy]:
        """Every policy whose destination network contains, equals or lies inside this one."""
        start, plen, bits = _net(daddr, prefixlen)
        for shorter in range(plen + 1):  # the same network or a larger one that holds it
            mask = ((1 << bits) - 1) ^ ((1 << (bits - shorter)) - 1)
            yield from self.exact.get((start & mask, shorter), ())
        end = start | ((1 << (bits - plen)) - 1)
        lo, hi = bisect.bisect_left(self.starts, start), bisect.bisect_right(self.starts, end)
        for _s, qlen, q in self.spans[lo:hi]:  # smaller networks inside it
            if qlen > plen:
                yield q


def _drop(group: list[XfrmPolicy] | None, p: XfrmPolicy) -> None:
    """Remove ``p`` itself (not an equal policy) from ``group``."""
    if group is None:
        return
    for i, q in enumerate(group):
        if q is p:
            del group[i]
            return


class PolicyIndex:
    """Built from one dump, then kept by ``add``/``remove`` (of the very objects added);
    ``is_agent`` tells the agent's own policies from everyone else's."""

    def __init__(self, policies: list[XfrmPolicy], is_agent: Callable[[XfrmPolicy], bool]) -> None:
        self.is_agent = is_agent
        self.charon_by_reqid: dict[int, list[XfrmPolicy]] = defaultdict(list)
        self.agent_by_reqid: dict[int, list[XfrmPolicy]] = defaultdict(list)
        self._dest: dict[tuple[Any, ...], _ByDestination] = defaultdict(_ByDestination)
        self._sealed = False
        for p in policies:
            self.add(p)
        for d in self._dest.values():
            d.seal()
        self._sealed = True

    def _lists(self, p: XfrmPolicy) -> Iterator[list[XfrmPolicy]]:
        reqids = {t.reqid for t in p.templates}
        if self.is_agent(p):
            yield from (self.agent_by_reqid[r] for r in reqids)
        elif p.dir in (c.XFRM_POLICY_IN, c.XFRM_POLICY_OUT) and p.ptype == c.XFRM_POLICY_TYPE_MAIN:
            yield from (self.charon_by_reqid[r] for r in reqids)

    def add(self, p: XfrmPolicy) -> None:
        for group in self._lists(p):
            group.append(p)
        if not self.is_agent(p):
            d = self._dest[p.dir, p.mark, p.if_id, p.sel.family]
            if self._sealed and not d.sealed:
                d.seal()
            d.add(p)

    def remove(self, p: XfrmPolicy) -> None:
        """Forget ``p``, the object that was added (a notification's copy is a different object)."""
        for group in self._lists(p):
            _drop(group, p)
        if not self.is_agent(p):
            d = self._dest.get((p.dir, p.mark, p.if_id, p.sel.family))
            if d is not None:
                d.remove(p)

    def charon(self, reqid: int) -> list[XfrmPolicy]:
        """Policies not the agent's, main type, dir in or out, with a template of ``reqid``."""
        return self.charon_by_reqid.get(reqid, [])

    def agent(self, reqid: int) -> list[XfrmPolicy]:
        return self.agent_by_reqid.get(reqid, [])

    def overlapping(self, p: XfrmPolicy) -> Iterator[XfrmPolicy]:
        """Policies not the agent's, of ``p``'s dir, mark and if_id, that some packet matching
        ``p`` could match too (``p`` itself excluded)."""
        group = self._dest.get((p.dir, p.mark, p.if_id, p.sel.family))
        if group is None:
            return
        for q in group.overlapping(p.sel.daddr, p.sel.prefixlen_d):
            if q is not p and q.sel.overlaps(p.sel):
                yield q
