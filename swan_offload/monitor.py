"""The XFRM monitor thread: the kernel's notifications feed the mirror and wake the daemon.

Every notification, the agent's own included, becomes a mirror Change in ``inbox``, in the
kernel's order; the main thread applies them (it alone touches the mirror). The agent's own
are made from what it wrote (the backend socket's ``written``), without decoding. Only changes
made by others wake the daemon: with the reqids they concern, so that the daemon plans
just the IKE_SAs holding them. ``barrier`` makes sure every notification the kernel sent
before it was called is in the inbox: charon sends a VICI event after its netlink writes,
so after a barrier the mirror holds what that event is about.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from . import mirror as mi
from .xfrm import constants as c
from .xfrm.netlink import DRAINED, Written, XfrmSocket, decode_message

log = logging.getLogger("swan_offload.daemon")

TRIGGERS = {c.XFRM_MSG_NEWSA, c.XFRM_MSG_DELSA, c.XFRM_MSG_UPDSA, c.XFRM_MSG_EXPIRE, c.XFRM_MSG_NEWPOLICY, c.XFRM_MSG_DELPOLICY, c.XFRM_MSG_UPDPOLICY, c.XFRM_MSG_FLUSHSA, c.XFRM_MSG_FLUSHPOLICY}
ENOBUFS_WHY = "the kernel dropped notifications (ENOBUFS)"
# changes waiting for the main thread, at most: past it (a hub's promotion writes 5 per CHILD_SA
# while the main thread is busy; a rekey storm during a resync) the inbox is dropped for one
# reload, as for ENOBUFS. A decoded change is some KiB: 50,000 of them were 400 MB at 10,000
INBOX_MAX = 4096


class XfrmMonitor(threading.Thread):
    """Puts ("xfrm", reqids | None) on ``q`` for changes not made by the agent (by sender
    port); None: a change no reqid locates (a flush, lost notifications, a bypass).

    A new SA is also handed to ``on_new_state`` right here: following a rekey of an offloaded
    CHILD_SA cannot wait for the main thread, which may be inside a slow list-sas.
    """

    def __init__(self, q: queue.Queue[Any], own_port: int, netns: str | None = None, on_new_state: Callable[[Any], None] | None = None,
                 inbox_max: int = INBOX_MAX, written: Written | None = None) -> None:
        super().__init__(name="xfrm-monitor", daemon=True)
        self.inbox_max = inbox_max
        self.q = q
        self.on_new_state = on_new_state
        self.own_port = own_port
        self.written = written
        self.echoes = 0  # own notifications taken from ``written`` undecoded
        self.sock = XfrmSocket(groups=(c.XFRMNLGRP_SA, c.XFRMNLGRP_POLICY, c.XFRMNLGRP_EXPIRE), netns=netns)
        self.inbox: deque[mi.Change | str] = deque()  # str: why the mirror must be reloaded
        self.stopping = threading.Event()
        self.seen = 0
        self._wake_r, self._wake_w = os.pipe()
        self._barrier_lock = threading.Lock()
        self._drained = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the thread ended already

    def barrier(self, timeout: float = 5.0) -> bool:
        """Return once every notification sent before this call is in ``inbox``; False if the
        thread did not answer in time (it may be stuck behind the daemon's lock: never call
        this holding it)."""
        if not self.is_alive():
            return False
        with self._barrier_lock:
            self._drained.clear()
            os.write(self._wake_w, b"b")
            return self._drained.wait(timeout)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for mtype, pid, seq, raw in self.sock.events(timeout=0.5, wake=self._wake_r):
                    if mtype == DRAINED:
                        self._drained.set()
                    else:
                        self._take(mtype, pid, seq, raw)
                    if self.stopping.is_set():
                        break
        finally:
            self.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _take(self, mtype: int, pid: int, seq: int, raw: bytes) -> None:
        self.seen += 1
        if mtype < 0:
            self.inbox.append(ENOBUFS_WHY)
            self.q.put(("xfrm", None))
            return
        own = pid == self.own_port
        foreign = not own and mtype in TRIGGERS
        written = self.written.take(seq) if own and self.written is not None else None
        msg: Any = None
        if foreign and self.on_new_state and mtype in (c.XFRM_MSG_NEWSA, c.XFRM_MSG_UPDSA):
            # first: until a rekey's new SA is moved the kernel drops that CHILD_SA's traffic.
            # The follower's writes come after this notification in the socket, so the inbox
            # keeps the kernel's order.
            msg = decode_message(mtype, raw)
            self.on_new_state(msg)
        if self.inbox and isinstance(self.inbox[0], str):
            # a reload is due and nothing before it waits: the dump it takes comes after this
            # notification, which needs no decoding (at a hub that was a core for minutes)
            if foreign:
                self.q.put(("xfrm", None))
            return
        ch: mi.Change | str | None = mi.change_of_written(mtype, written) if written is not None else None
        if ch is not None:
            self.echoes += 1
        else:
            try:
                ch = mi.change_of(mtype, msg if msg is not None else decode_message(mtype, raw), foreign=not own)
            except (ValueError, KeyError, TypeError) as e:  # a notification we cannot read: reload
                # the error's type only: its text could quote the message, keys included
                log.warning("unreadable XFRM notification (type %d): %s; the kernel mirror is reloaded", mtype, type(e).__name__)
                ch = f"unreadable notification of type {mtype}"
        if ch is not None:
            if len(self.inbox) >= self.inbox_max:  # a reload replaces what waits, and this
                self.inbox.clear()
                self.inbox.append(f"more than {self.inbox_max} kernel changes waited to be read")
                self.q.put(("xfrm", None))
                return
            self.inbox.append(ch)
        if foreign:
            self.q.put(("xfrm", ch.reqids if isinstance(ch, mi.Change) and ch.reqids else None))
