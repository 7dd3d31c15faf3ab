"""Devices over rtnetlink: link events (RTNLGRP_LINK), and one dump of links and addresses.

When an offload device goes down, the kernel drops every SA and policy offloaded to it
without an XFRM notification, so link state is the only signal the agent gets. The dump is
a few structs read with ``struct``: pyroute2's IPRoute, which did it before, cost 15 MB of
RSS in imports (a third of the agent's margin at 10,000 CHILD_SAs) and a socket per read.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .xfrm.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, open_netlink, parse_error, walk_messages

RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_GETADDR = 16, 17, 18, 22
IFLA_IFNAME, IFA_ADDRESS, IFA_LOCAL = 3, 1, 2
IFF_UP = 0x1
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_NLMSG_HDR_LEN = 16
_RTA = struct.Struct("=HH")


def parse_link_events(data: bytes) -> Iterator[tuple[int, bool]]:
    """(ifindex, up) for each link message of a datagram; a deleted link is down."""
    for mtype, _flags, _seq, _pid, msg in walk_messages(data):
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(msg) >= _NLMSG_HDR_LEN + _IFINFO.size:
            _fam, _typ, index, flags, _change = _IFINFO.unpack_from(msg, _NLMSG_HDR_LEN)
            yield index, mtype == RTM_NEWLINK and bool(flags & IFF_UP)


def _attrs(msg: bytes, off: int) -> dict[int, bytes]:
    """The route attributes of a message from ``off`` (the first of each type)."""
    out: dict[int, bytes] = {}
    while off + _RTA.size <= len(msg):
        alen, atype = _RTA.unpack_from(msg, off)
        if alen < _RTA.size or off + alen > len(msg):
            break
        out.setdefault(atype & 0x3FFF, msg[off + _RTA.size : off + alen])
        off += (alen + 3) & ~3
    return out


def _dump(sock: socket.socket, mtype: int, body: bytes, seq: int) -> Iterator[bytes]:
    """Every message of one rtnetlink dump."""
    sock.send(struct.pack("=IHHII", _NLMSG_HDR_LEN + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    while True:
        for rtype, flags, rseq, _pid, msg in walk_messages(sock.recv(1 << 16)):
            if rseq != seq:
                continue
            if rtype == NLMSG_DONE:
                return
            if rtype == NLMSG_ERROR:
                err, _text = parse_error(msg[_NLMSG_HDR_LEN:], flags)
                if err:
                    raise OSError(err, f"rtnetlink dump of type {mtype}: {os.strerror(err)}")
                return
            yield msg


def read_devices(netns: str | None = None) -> tuple[list[tuple[int, str, bool]], list[tuple[int, str]]]:
    """(links as (ifindex, name, up), addresses as (ifindex, address)): one dump of each.
    An address is IFA_ADDRESS, else IFA_LOCAL, as ``ip`` shows it (inet_ntop)."""
    sock = open_netlink(socket.NETLINK_ROUTE, netns)
    try:
        sock.bind((0, 0))
        links = []
        for msg in _dump(sock, RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 1):
            _fam, _typ, index, flags, _change = _IFINFO.unpack_from(msg, _NLMSG_HDR_LEN)
            name = _attrs(msg, _NLMSG_HDR_LEN + _IFINFO.size).get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
            links.append((index, name, bool(flags & IFF_UP)))
        addresses = []
        for msg in _dump(sock, RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 2):
            family, _plen, _flags, _scope, index = _IFADDR.unpack_from(msg, _NLMSG_HDR_LEN)
            attrs = _attrs(msg, _NLMSG_HDR_LEN + _IFADDR.size)
            raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
            if raw and family in (socket.AF_INET, socket.AF_INET6):
                addresses.append((index, socket.inet_ntop(family, raw)))
        return links, addresses
    finally:
        sock.close()


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
