"""charon over VICI: one listening session in a thread, short command sessions for queries.

A VICI session that listens cannot send commands, so queries (``version``,
``list-sas``) use their own connection. When charon goes away the listener
reconnects with exponential backoff and reports it; the daemon then resyncs
from ``list-sas``, which is authoritative (events only say *when* to look).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import vici
import vici.exception

from .model import ChildSA, SaList

log = logging.getLogger("swan_offload.vici")

EVENTS = ["child-updown", "child-rekey", "ike-updown", "ike-rekey", "ike-update"]
VICI_ERRORS = (OSError, vici.exception.SessionException, vici.exception.DeserializationException, vici.exception.CommandException)


def _connect(path: str, timeout: float = 5.0) -> vici.Session:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError:
        s.close()
        raise
    s.settimeout(None)
    return vici.Session(sock=s)


def _close(sess: vici.Session) -> None:
    try:
        sess.transport.socket.close()
    except OSError:
        pass


def version(path: str) -> dict[str, str]:
    sess = _connect(path)
    try:
        return {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in sess.version().items()}
    finally:
        _close(sess)


# charon discards a message over 512 KiB instead of sending it (vici_socket.c send_()): the
# list-sa event of an IKE_SA with ~1,300 CHILD_SAs or more never arrives, though the command's
# response does. Asked with a CHILD_SA name no swanctl.conf section can have (no spaces
# there), charon lists each IKE_SA without its CHILD_SAs: a small message each, the roster
# that tells such an IKE_SA from one that is gone.
VICI_MESSAGE_MAX = 512 * 1024
ROSTER_CHILD = "swan-offload roster"


def list_sas(path: str, queries: Iterable[tuple[int, int | None]] | None = None, known: Mapping[int, Iterable[int]] | None = None) -> SaList:
    """Every IKE_SA and CHILD_SA charon holds, or those ``queries`` name: (IKE_SA uniqueid,
    None for all its CHILD_SAs or one CHILD_SA's uniqueid); entries that do not parse are
    named, not dropped.

    A query goes with ``noblock`` first: charon then skips IKE_SAs other threads hold instead
    of waiting for each (it enumerates all of them, whatever the filter). But it skips the one
    asked for too while it is held, as it is while charon raises its event, so a query whose
    IKE_SA is not in that answer is asked again, waiting: only that answer says it is gone.

    An IKE_SA charon holds but cannot list whole (VICI_MESSAGE_MAX) is read one CHILD_SA at a
    time, those ``known`` (by IKE_SA uniqueid) names, and is marked unreadable: the rest of its
    CHILD_SAs keep their kernel objects as they are, as for an entry that does not parse.
    """
    sess = _connect(path)
    out = SaList()
    try:
        if queries is None:
            total = _ike_count(sess)
            for msg in sess.list_sas():
                out.add(msg)
            listed = _ike_ids(out)
            if total is not None and len(listed) >= total:
                return out  # charon sent every IKE_SA it counted before: none was too big
            for name, ike_id in _roster(sess, {}):
                if ike_id not in listed and not _ask(sess, out, {"ike-id": str(ike_id)}):
                    _page(sess, out, name, ike_id, (known or {}).get(ike_id, ()))
            return out
        for ike_id, child_id in queries:
            filt = {"ike-id": str(ike_id)} | ({"child-id": str(child_id)} if child_id is not None else {})
            if _ask(sess, out, {**filt, "noblock": "yes"}) or _ask(sess, out, filt) or child_id is not None:
                continue
            for name, _i in _roster(sess, {"ike-id": str(ike_id)}):
                _page(sess, out, name, ike_id, (known or {}).get(ike_id, ()))
    finally:
        _close(sess)
    return out


def _ike_count(sess: vici.Session) -> int | None:
    """How many IKE_SAs charon holds (``stats``, a small message), None if it will not say."""
    try:
        raw = sess.stats().get("ikesas", {}).get("total")
        return int(raw.decode() if isinstance(raw, bytes) else raw)
    except (*VICI_ERRORS, AttributeError, TypeError, ValueError):
        return None


def _ike_ids(sas: SaList) -> set[int]:
    return {i.uniqueid for i in sas.ikes} | {i for _n, i in sas.unreadable if i is not None}


def _ask(sess: vici.Session, out: SaList, filt: dict[str, str]) -> bool:
    """One list-sas into ``out``; True if it listed an IKE_SA."""
    before = len(out.ikes) + len(out.unreadable) + out.unnamed
    for msg in sess.list_sas(filt):
        out.add(msg)
    return len(out.ikes) + len(out.unreadable) + out.unnamed > before


def _roster(sess: vici.Session, filt: dict[str, str]) -> list[tuple[str, int]]:
    """(name, uniqueid) of the IKE_SAs ``filt`` names, without their CHILD_SAs."""
    part = SaList()
    for msg in sess.list_sas({**filt, "child": ROSTER_CHILD}):
        part.add(msg)
    return [(i.name, i.uniqueid) for i in part.ikes]


def _page(sess: vici.Session, out: SaList, name: str, ike_id: int, uids: Iterable[int]) -> None:
    """An IKE_SA too big for one message: its CHILD_SAs ``uids``, one message each."""
    part = SaList()
    for uid in uids:
        for msg in sess.list_sas({"ike-id": str(ike_id), "child-id": str(uid)}):
            part.add(msg)
    kids = [ch for ch in part.children if ch.ike_uniqueid == ike_id]
    out.children.extend(kids)
    out.ikes.extend({i.uniqueid: i for i in part.ikes if i.uniqueid == ike_id}.values())
    out.unreadable[(name, ike_id)] = frozenset(ch.reqid for ch in kids)
    out.discarded.add((name, ike_id))
    out.errors.append(
        f"IKE_SA {name} #{ike_id}: charon cannot list it whole (its list-sa message exceeds VICI's "
        f"{VICI_MESSAGE_MAX // 1024} KiB limit); read {len(kids)} known CHILD_SA(s) one by one, the others are "
        "left as they are in the kernel until an event names them"
    )


def list_children(path: str) -> list[ChildSA]:
    """The CHILD_SAs of every IKE_SA entry that parses (for reports; the daemon uses list_sas)."""
    return list_sas(path).children


def rekey_child(path: str, uniqueid: int) -> None:
    """Ask charon to rekey one CHILD_SA; returns once charon has started the exchange."""
    sess = _connect(path)
    try:
        sess.rekey({"child-id": str(uniqueid)})
    finally:
        _close(sess)


class Listener(threading.Thread):
    """Puts ("connected"|"disconnected"|"event", payload) on ``q``; reconnects forever.

    An event's payload is (name, message, wall clock at arrival): the arrival starts the
    CHILD_SA's promotion latency, however long the main thread takes to get to it.
    """

    def __init__(self, path: str, q: queue.Queue[Any], max_backoff: float = 30.0, poll: float = 0.5) -> None:
        super().__init__(name="vici-listener", daemon=True)
        self.path = path
        self.q = q
        self.max_backoff = max_backoff
        self.poll = poll
        self.stopping = threading.Event()
        self.connected = False
        self.session: vici.Session | None = None
        self.last_tick = 0.0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = 0.25
        while not self.stopping.is_set():
            try:
                sess = _connect(self.path)
            except OSError as e:
                self._down(f"cannot connect to {self.path}: {e.strerror or e}")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.25
            try:
                self._listen(sess)
            except VICI_ERRORS as e:
                self._down(f"VICI session lost: {e}")
            except Exception as e:  # noqa: BLE001 - a frame the client cannot parse: drop the session, resync
                log.error("malformed VICI message (%s: %s); reconnecting and resyncing", type(e).__name__, e)
                self._down(f"malformed VICI message: {type(e).__name__}")
            finally:
                _close(sess)

    def kick(self) -> None:
        """Drop a session stuck inside a frame (the client waits forever for the rest of it)."""
        sess = self.session
        if sess is not None:
            try:
                sess.transport.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stuck(self, limit: float) -> bool:
        return self.connected and time.monotonic() - self.last_tick > limit

    def _listen(self, sess: vici.Session) -> None:
        self.session = sess
        self.last_tick = time.monotonic()
        self.connected = True
        self.q.put(("connected", None))
        gen = sess.listen(EVENTS, timeout=self.poll)
        for label, msg in gen:
            self.last_tick = time.monotonic()
            if self.stopping.is_set():
                gen.close()
                return
            if label is None:
                continue
            name = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
            self.q.put(("event", (name, msg, time.time())))

    def _down(self, why: str) -> None:
        if self.connected:
            self.connected = False
            self.q.put(("disconnected", why))
        elif not getattr(self, "_said", None) == why:
            log.debug(why)
        self._said = why


def describe_event(name: str, msg: Any) -> str:
    """A log line for an event: names and SPIs only, never anything else."""
    try:
        parts = []
        for ike, sec in msg.items():
            if not isinstance(sec, dict):
                continue
            for cname in (sec.get("child-sas") or {}):
                parts.append(f"{ike}/{cname}")
            if not sec.get("child-sas"):
                parts.append(ike)
        return f"{name} {' '.join(parts)}".strip()
    except AttributeError:
        return name
