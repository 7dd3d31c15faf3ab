"""A small synchronous XFRM netlink socket.

pyroute2 (0.9) gives the message classes; the transport is a plain socket so
that a batch of requests leaves in as few ``sendmsg`` calls as the kernel's
limits allow (it handles one datagram's messages back to back, under one hold of
its XFRM configuration mutex), every request gets its own ack, and no asyncio
loop is needed in the daemon's threads. Extended acks are on, so kernel refusals
carry the kernel's own text.
"""

from __future__ import annotations

import errno as errno_mod
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import constants as c
from . import pack
from .messages import MESSAGE_CLASSES

SOL_NETLINK = 270
SO_RCVBUFFORCE = 33
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2
_HDR = struct.Struct("=IHHII")
DRAINED = -1  # events(): everything queued before the wake-up has been yielded


class XfrmError(OSError):
    """A kernel refusal: errno, the extended-ack text, and which request (no keys)."""

    def __init__(self, err: int, ext_ack: str | None, what: str = "") -> None:
        self.ext_ack = ext_ack or None
        self.what = what
        text = os.strerror(err)
        if ext_ack:
            text = f"{text}: {ext_ack}"
        super().__init__(err, f"{what}: {text}" if what else text)

    @property
    def reason(self) -> str:
        """What an operator should read: the kernel's text, else the errno text."""
        return self.ext_ack or os.strerror(self.errno or 0)


@dataclass
class Request:
    """One message in a batch. ``what`` describes it in errors and logs.

    ``joined``: it must leave in the same datagram as the request before it (the NEWSA of a
    DELSA+NEWSA move: the kernel then lets no other change in between).
    """

    msg_type: int
    msg: Any
    flags: int = NLM_F_REQUEST | NLM_F_ACK
    what: str = ""
    joined: bool = False
    raw: bool = False  # replies as the kernel's bytes (whole messages), not decoded
    # each decoded reply through this as it arrives: a dump of a hub then never holds all its
    # decoded messages (KiBs each) at once, only what they convert to
    convert: Callable[[Any], Any] | None = None
    # what a write is (the object added, the identity deleted): kept by sequence number in the
    # socket's ``written`` until the monitor meets the notification it causes (Written)
    sent: Any = None


# Bytes of requests per datagram. The kernel refuses a datagram larger than the socket's send
# buffer (EMSGSIZE; ~208 KiB by default), and each request's ack takes ~1 KiB of the receive
# buffer until read: 64 KiB of requests (~150 NEWSA, ~250 NEWPOLICY) stay well under both.
CHUNK_BYTES = 64 << 10


def chunks(sizes: list[int], joined: list[bool], limit: int = CHUNK_BYTES) -> list[range]:
    """Split requests of ``sizes`` into runs of at most ``limit`` bytes, never between a
    joined request and the one before it (a run may exceed the limit only to keep one unit)."""
    out: list[range] = []
    start, size = 0, 0
    for i, n in enumerate(sizes):
        if i > start and not joined[i] and size + n > limit:
            out.append(range(start, i))
            start, size = i, 0
        size += n
    if sizes:
        out.append(range(start, len(sizes)))
    return out


class Written:
    """What this socket wrote, by sequence number, until the monitor takes it.

    The kernel echoes each accepted write to the monitor with the writer's port and the
    request's sequence number. A hub's promotion is 5 writes per CHILD_SA; decoding those
    echoes was most of the monitor's work (issue 13), and the agent knows what they say.
    Refused writes send no echo and are dropped at their ack; echoes the kernel dropped
    (ENOBUFS) are forgotten oldest first past ``limit``."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.limit = limit
        self._by_seq: dict[int, Any] = {}
        self._lock = threading.Lock()

    def put(self, seq: int, obj: Any) -> None:
        with self._lock:
            self._by_seq.pop(seq, None)  # a sequence number wrapped: the older is long gone
            self._by_seq[seq] = obj
            while len(self._by_seq) > self.limit:
                del self._by_seq[next(iter(self._by_seq))]

    def take(self, seq: int) -> Any:
        with self._lock:
            return self._by_seq.pop(seq, None)

    def __len__(self) -> int:
        return len(self._by_seq)


@dataclass
class Reply:
    error: XfrmError | None = None
    messages: list[Any] = field(default_factory=list[Any])

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_error(data: bytes, flags: int) -> tuple[int, str | None]:
    """Decode an NLMSG_ERROR payload: (positive errno or 0, ext-ack text)."""
    (err,) = struct.unpack_from("=i", data, 0)
    off = 4
    if len(data) >= off + _HDR.size:
        olen = _HDR.unpack_from(data, off)[0]
        off += _HDR.size if flags & NLM_F_CAPPED else max(olen, _HDR.size)
    text = None
    if flags & NLM_F_ACK_TLVS:
        while off + 4 <= len(data):
            alen, atype = struct.unpack_from("=HH", data, off)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                text = data[off + 4 : off + alen].split(b"\0", 1)[0].decode(errors="replace")
            off += (alen + 3) & ~3
    return -err, text


def walk_messages(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """Yield (type, flags, seq, port, whole message) for each netlink message of a datagram.

    A truncated or malformed header ends the walk. Any netlink family: XFRM and rtnetlink
    reuse the same type numbers, so decoding is the caller's.
    """
    off = 0
    while off + _HDR.size <= len(data):
        length, mtype, flags, seq, pid = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > len(data):
            break
        yield mtype, flags, seq, pid, data[off : off + length]
        off += (length + 3) & ~3


def decode_message(mtype: int, chunk: bytes) -> Any:
    """A whole message (as ``events`` yields it) as its XFRM message class (unpacked by pack.py, or by pyroute2 where
    pack has no rule), or its payload for other types."""
    cls = MESSAGE_CLASSES.get(mtype)
    if cls is None:
        return chunk[_HDR.size :]
    try:
        return pack.decode(cls, chunk)
    except pack.Unpackable:
        msg = cls(chunk)
        msg.decode()
        return msg


def _encode(msg: Any, mtype: int, flags: int, seq: int, port: int) -> bytes:
    """A request's bytes: packed with struct (pack.py), or by pyroute2 where pack has no rule."""
    try:
        return pack.encode(msg, mtype, flags, seq, port)
    except pack.Unpackable:
        full = msg.full() if isinstance(msg, pack.Plain) else msg
        full["header"] = {"type": mtype, "flags": flags, "sequence_number": seq, "pid": port}
        full.encode()
        return bytes(full.data)


def decode_messages(data: bytes) -> Iterator[tuple[int, int, int, int, Any]]:
    """Yield (type, flags, seq, port, decoded XFRM message or raw payload) for each message."""
    for mtype, flags, seq, pid, chunk in walk_messages(data):
        yield mtype, flags, seq, pid, decode_message(mtype, chunk)


def open_netlink(protocol: int, netns: str | None = None) -> socket.socket:
    """A raw netlink socket of ``protocol``, inside the named network namespace if given."""
    if netns:
        from pyroute2 import netns as _netns

        sock: socket.socket = _netns.create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        return sock
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)


class XfrmSocket:
    """Request/response XFRM socket; with ``groups`` it is a monitor instead."""

    RECV_SIZE = 1 << 20
    RCVBUF = 8 << 20  # a monitor's burst of notifications (a rekey storm) before ENOBUFS

    def __init__(self, groups: tuple[int, ...] = (), netns: str | None = None) -> None:
        self.sock = open_netlink(c.NETLINK_XFRM, netns)
        try:  # past net.core.rmem_max: needs CAP_NET_ADMIN, which the agent has
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.RCVBUF)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        for g in groups:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)
        self._seq = 1
        self._lock = threading.Lock()
        self.port = self.sock.getsockname()[0]
        self.written = Written()

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ requests

    def batch(self, requests: list[Request], timeout: float = 10.0) -> list[Reply]:
        """Send the requests in datagrams of at most CHUNK_BYTES, reading each one's acks
        before the next leaves; return one Reply per request, in order. A refused request
        does not stop the others: every one has its own Reply."""
        if not requests:
            return []
        with self._lock:
            raws, seqs = [], []
            for r in requests:
                seq = self._seq
                self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
                data = _encode(r.msg, r.msg_type, r.flags, seq, self.port)
                raws.append(data + b"\0" * ((-len(data)) % 4))
                seqs.append(seq)
            replies = {s: Reply() for s in seqs}
            whats = dict(zip(seqs, (r.what for r in requests)))
            undecoded = {s for s, r in zip(seqs, requests) if r.raw}
            converts = {s: r.convert for s, r in zip(seqs, requests) if r.convert is not None}
            sent = [(s, r.sent) for s, r in zip(seqs, requests) if r.sent is not None]
            for s, obj in sent:  # before the send: the echo can be read before the ack
                self.written.put(s, obj)
            for run in chunks([len(x) for x in raws], [r.joined for r in requests]):
                self.sock.send(b"".join(raws[i] for i in run))
                self._collect({seqs[i] for i in run}, replies, whats, undecoded, timeout, converts)
            for s, _obj in sent:
                if replies[s].error is not None:
                    self.written.take(s)
            return [replies[s] for s in seqs]

    def _collect(self, pending: set[int], replies: dict[int, Reply], whats: dict[int, str], raw: set[int], timeout: float,
                 converts: dict[int, Callable[[Any], Any]]) -> None:
        """Read until every request in ``pending`` has its ack (or its dump's end)."""
        while pending:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                raise XfrmError(errno_mod.ETIMEDOUT, "no answer from the kernel", whats[min(pending)])
            data = self.sock.recv(self.RECV_SIZE)
            for mtype, flags, seq, _pid, chunk in walk_messages(data):
                if seq not in replies:
                    continue
                if mtype not in (NLMSG_ERROR, NLMSG_DONE):
                    got = chunk if seq in raw else decode_message(mtype, chunk)
                    replies[seq].messages.append(converts[seq](got) if seq in converts else got)
                    continue
                if mtype == NLMSG_ERROR:
                    err, text = parse_error(chunk[_HDR.size :], flags)
                    if err:
                        replies[seq].error = XfrmError(err, text, whats[seq])
                pending.discard(seq)

    def request(self, req: Request) -> list[Any]:
        reply = self.batch([req])[0]
        if reply.error:
            raise reply.error
        return reply.messages

    def dump(self, msg_type: int, msg: Any, what: str = "dump", raw: bool = False, convert: Callable[[Any], Any] | None = None) -> list[Any]:
        """Every object of a dump, decoded (or, with ``raw``, each message's bytes), each
        through ``convert`` if given."""
        return self.request(Request(msg_type, msg, NLM_F_REQUEST | NLM_F_DUMP, what, raw=raw, convert=convert))

    # ------------------------------------------------------------ monitor

    def events(self, timeout: float | None = None, wake: int | None = None) -> Iterator[tuple[int, int, int, bytes]]:
        """Yield (type, sender port, sequence number, whole message undecoded: see
        ``decode_message``) from the joined groups until ``timeout`` passes idle.

        The kernel stamps a notification with the port id and sequence number of the request
        that caused it, so a listener can tell its own changes from charon's. When the file descriptor
        ``wake`` becomes readable, everything the socket holds is yielded, then (DRAINED, 0,
        0, b""): whatever the kernel had sent before the wake-up has been seen.
        """
        fds: list[Any] = [self.sock] + ([wake] if wake is not None else [])
        while True:
            ready, _, _ = select.select(fds, [], [], timeout)
            if not ready:
                return
            if wake is not None and wake in ready:
                os.read(wake, 64)
                while True:
                    got = self._receive(socket.MSG_DONTWAIT)
                    if got is None:
                        break
                    yield from got
                yield (DRAINED, 0, 0, b"")
                continue
            got = self._receive(0)
            if got is not None:
                yield from got

    def _receive(self, flags: int) -> list[tuple[int, int, int, bytes]] | None:
        """One datagram's notifications; None when none waits (non-blocking)."""
        try:
            data = self.sock.recv(self.RECV_SIZE, flags)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno_mod.ENOBUFS:
                # the kernel dropped notifications: tell the caller to resync
                return [(-errno_mod.ENOBUFS, 0, 0, b"")]
            raise
        return [(mtype, pid, seq, chunk) for mtype, _flags, seq, pid, chunk in walk_messages(data)]
