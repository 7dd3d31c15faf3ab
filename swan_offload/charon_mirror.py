"""charon's IKE_SAs and CHILD_SAs as ``list-sas`` last said, kept per IKE_SA and CHILD_SA.

A full ``list-sas`` of a hub is thousands of IKE_SAs, or one IKE_SA with thousands of
CHILD_SAs; an event names one IKE_SA, or one or two of its CHILD_SAs. The full answer loads
this mirror; what an event names is then asked for alone (``list-sas`` with ``ike-id``, and
``child-id`` for a CHILD_SA event) and replaced here, so the reconcile of an event reads
the rest from memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import ChildSA, IkeSA, SaList

Key = tuple[str, int]  # a CHILD_SA's (IKE_SA name, uniqueid)


@dataclass
class Scope:
    """What events named since the last sync: whole IKE_SAs, and single CHILD_SAs as
    (IKE_SA uniqueid, CHILD_SA uniqueid)."""

    ikes: set[int] = field(default_factory=set)
    children: set[tuple[int, int]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.ikes or self.children)

    def __ior__(self, other: Scope) -> Scope:
        self.ikes |= other.ikes
        self.children |= other.children
        return self

    def queries(self) -> list[tuple[int, int | None]]:
        """(ike-id, child-id or None) to ask charon, a CHILD_SA of a whole IKE_SA asked not."""
        return [(i, None) for i in sorted(self.ikes)] + sorted((i, c) for i, c in self.children if i not in self.ikes)


class CharonMirror:
    def __init__(self) -> None:
        self._reset()
        self.loaded = False

    def _reset(self) -> None:
        self.ikes: dict[int, IkeSA] = {}
        self.children: dict[Key, ChildSA] = {}
        self.unreadable: dict[tuple[str, int | None], frozenset[int]] = {}
        self.unnamed = 0
        self._of_ike: dict[int, set[Key]] = defaultdict(set)
        self._by_reqid: dict[int, set[Key]] = defaultdict(set)
        self._by_uid: dict[int, Key] = {}

    def load(self, sas: SaList) -> None:
        """Everything from one full ``list-sas``."""
        self._reset()
        self._take(sas)
        self.unnamed = sas.unnamed
        self.loaded = True

    def update(self, scope: Scope, answer: SaList) -> None:
        """What ``list-sas`` answered for ``scope``: an IKE_SA or CHILD_SA it asked for and
        the answer does not list is gone; one whose entry did not parse keeps its CHILD_SAs
        (unreadable is not gone) and is marked unreadable until it parses again."""
        stuck = {i for _name, i in answer.unreadable if i is not None}
        for i in scope.ikes:
            self.unreadable = {k: v for k, v in self.unreadable.items() if k[1] != i}
            if i not in stuck:
                self.ikes.pop(i, None)
                for k in list(self._of_ike.get(i, ())):
                    self._drop(k)
        for i, uid in scope.children:
            if i not in stuck and uid in self._by_uid:
                self._drop(self._by_uid[uid])
        self._take(answer)
        self.unnamed += answer.unnamed

    def _drop(self, k: Key) -> None:
        ch = self.children.pop(k, None)
        if ch is None:
            return
        self._by_uid.pop(ch.uniqueid, None)
        for index, at in ((self._of_ike, ch.ike_uniqueid), (self._by_reqid, ch.reqid)):
            keys = index.get(at)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del index[at]

    def _take(self, sas: SaList) -> None:
        for ike in sas.ikes:
            self.ikes[ike.uniqueid] = ike
        for ch in sas.children:
            self._drop(ch.key)
            self.children[ch.key] = ch
            self._of_ike[ch.ike_uniqueid].add(ch.key)
            self._by_reqid[ch.reqid].add(ch.key)
            self._by_uid[ch.uniqueid] = ch.key
        self.unreadable.update(sas.unreadable)

    def with_reqids(self, reqids: Iterable[int]) -> set[Key]:
        """The CHILD_SAs of one of ``reqids``."""
        out: set[Key] = set()
        for r in reqids:
            out |= self._by_reqid.get(r, set())
        return out

    def scope_of_reqids(self, reqids: Iterable[int]) -> Scope:
        """The CHILD_SAs of ``reqids`` as a scope to ask charon about (their kernel objects changed)."""
        return Scope(children={(self.children[k].ike_uniqueid, k[1]) for k in self.with_reqids(reqids)})

    def of_ikes(self, ike_ids: Iterable[int]) -> set[Key]:
        out: set[Key] = set()
        for i in ike_ids:
            out |= self._of_ike.get(i, set())
        return out

    def child_ids(self, ike_ids: Iterable[int] | None = None) -> dict[int, set[int]]:
        """CHILD_SA uniqueids by IKE_SA, for reading an IKE_SA charon cannot list whole one
        CHILD_SA at a time (vici_source.list_sas). Asked for some IKE_SAs (an IKE rekey's old
        and new), each is given the CHILD_SAs of all of them: a rekey moves them across."""
        if ike_ids is None:
            return {i: {k[1] for k in keys} for i, keys in self._of_ike.items()}
        ids = list(ike_ids)
        uids = {k[1] for k in self.of_ikes(ids)}
        return {i: set(uids) for i in ids}

    def keys_of(self, scope: Scope) -> set[Key]:
        """The CHILD_SAs ``scope`` names that the mirror holds."""
        return self.of_ikes(scope.ikes) | {self._by_uid[c] for _i, c in scope.children if c in self._by_uid}

    def sa_list(self, keys: Iterable[Key] | None = None, ike_ids: Iterable[int] = ()) -> SaList:
        """The mirror (or the CHILD_SAs ``keys`` and IKE_SAs ``ike_ids`` of it) as a list-sas answer."""
        if keys is None:
            return SaList(children=list(self.children.values()), ikes=list(self.ikes.values()), unreadable=dict(self.unreadable), unnamed=self.unnamed)
        kids = [self.children[k] for k in keys if k in self.children]
        ids = {ch.ike_uniqueid for ch in kids} | set(ike_ids)
        names = {self.ikes[i].name for i in ids if i in self.ikes}
        unreadable = {k: v for k, v in self.unreadable.items() if k[1] in ids or (k[1] is None and k[0] in names)}
        return SaList(children=kids, ikes=[self.ikes[i] for i in sorted(ids) if i in self.ikes], unreadable=unreadable)

    def __len__(self) -> int:
        return len(self.children)


def _uniqueid(sec: Mapping[str, Any]) -> int | None:
    raw = sec.get("uniqueid")
    try:
        return int(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (ValueError, UnicodeDecodeError):
        return None


def event_scope(name: str, msg: Any) -> Scope | None:
    """What an event message names: the CHILD_SAs of a child-updown or child-rekey (old and
    new), the IKE_SAs of the others (an ike-rekey's old and new). None when a section names
    nothing readable, so the caller reads everything."""
    if not isinstance(msg, Mapping):
        return None
    out = Scope()
    for _name, sec in msg.items():
        if not isinstance(sec, Mapping):
            continue  # "up" = yes and the like
        if name.startswith("child-") and "uniqueid" in sec:
            ike_id = _uniqueid(sec)
            kids = sec.get("child-sas")
            if ike_id is None or not isinstance(kids, Mapping) or not kids:
                return None
            for csec in kids.values():
                found = [csec] if isinstance(csec, Mapping) and "uniqueid" in csec else [v for k, v in csec.items() if k in ("old", "new")] if isinstance(csec, Mapping) else []
                uids = [_uniqueid(s) if isinstance(s, Mapping) else None for s in found]
                if not uids or None in uids:
                    return None
                out.children |= {(ike_id, u) for u in uids if u is not None}
            continue
        found = [sec] if "uniqueid" in sec else [v for k, v in sec.items() if k in ("old", "new") and isinstance(v, Mapping)]
        ids = [_uniqueid(s) for s in found]
        if not ids or None in ids:
            return None
        out.ikes |= {i for i in ids if i is not None}
    return out
