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
from collections.abc import Iterable
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


def list_sas(path: str, queries: Iterable[tuple[int, int | None]] | None = None) -> SaList:
    """Every IKE_SA and CHILD_SA charon holds, or those ``queries`` name: (IKE_SA uniqueid,
    None for all its CHILD_SAs or one CHILD_SA's uniqueid); entries that do not parse are
    named, not dropped.

    A query goes with ``noblock`` first: charon then skips IKE_SAs other threads hold instead
    of waiting for each (it enumerates all of them, whatever the filter). But it skips the one
    asked for too while it is held, as it is while charon raises its event, so a query whose
    IKE_SA is not in that answer is asked again, waiting: only that answer says it is gone.
    """
    sess = _connect(path)
    out = SaList()
    try:
        if queries is None:
            for msg in sess.list_sas():
                out.add(msg)
            return out
        for ike_id, child_id in queries:
            filt = {"ike-id": str(ike_id)} | ({"child-id": str(child_id)} if child_id is not None else {})
            before = len(out.ikes) + len(out.unreadable) + out.unnamed
            for block in (False, True):
                for msg in sess.list_sas(filt if block else {**filt, "noblock": "yes"}):
                    out.add(msg)
                if len(out.ikes) + len(out.unreadable) + out.unnamed > before:
                    break
    finally:
        _close(sess)
    return out


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
