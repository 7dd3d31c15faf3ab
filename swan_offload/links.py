"""Link events (rtnetlink RTNLGRP_LINK): when an offload device goes down, the kernel
drops every SA and policy offloaded to it without an XFRM notification, so link
state is the only signal the agent gets.
"""

from __future__ import annotations

import queue
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .xfrm.netlink import open_netlink, walk_messages

RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK = 16, 17
IFF_UP = 0x1
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLMSG_HDR_LEN = 16


def parse_link_events(data: bytes) -> Iterator[tuple[int, bool]]:
    """(ifindex, up) for each link message of a datagram; a deleted link is down."""
    for mtype, _flags, _seq, _pid, msg in walk_messages(data):
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(msg) >= _NLMSG_HDR_LEN + _IFINFO.size:
            _fam, _typ, index, flags, _change = _IFINFO.unpack_from(msg, _NLMSG_HDR_LEN)
            yield index, mtype == RTM_NEWLINK and bool(flags & IFF_UP)


def open_link_socket(netns: str | None = None) -> socket.socket:
    sock = open_netlink(socket.NETLINK_ROUTE, netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, RTMGRP_LINK))
    return sock


class LinkMonitor(threading.Thread):
    """Puts ("link", (ifindex, up)) on ``q`` when a device's IFF_UP changes or it is deleted.

    ``on_change(ifindex, up)`` is called first, right here: a device loss must be restored at
    once, not after the main thread's current resync (minutes at a hub under emulation).
    """

    def __init__(self, q: queue.Queue[Any], netns: str | None = None, on_change: Callable[[int, bool], None] | None = None) -> None:
        super().__init__(name="link-monitor", daemon=True)
        self.q = q
        self.on_change = on_change
        self.sock = open_link_socket(netns)
        self.stopping = threading.Event()
        self.up: dict[int, bool] = {}

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([self.sock], [], [], 0.5)
                if not ready:
                    continue
                try:
                    data = self.sock.recv(1 << 16)
                except OSError:
                    self.q.put(("link", None))  # overrun: the next resync reads every device
                    continue
                for index, up in parse_link_events(data):
                    if self.up.get(index) != up:  # carrier and rename messages repeat the same flag
                        self.up[index] = up
                        if self.on_change is not None:
                            self.on_change(index, up)
                        self.q.put(("link", (index, up)))
        finally:
            self.sock.close()
