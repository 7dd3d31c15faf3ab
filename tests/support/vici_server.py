"""A VICI test server that behaves like charon 5.9.8's vici plugin.

It speaks the wire protocol with its own encoder/decoder (not the `vici`
package's), so tests exercise the client's framing for real. Decoding of
what clients send is strict: every deviation from the protocol described in
strongSwan's vici/README.md is appended to `server.errors`, so a test can
end with `assert not server.errors`.

Behaviour copied from charon's vici_dispatcher.c / vici_query.c (5.9.8):
- unknown command -> CMD_UNKNOWN; (un)registering an unknown event, or
  unregistering an event the connection is not registered for -> EVENT_UNKNOWN;
- registering twice adds a second registration: events are then sent twice;
- (deliberate difference) a registration takes effect atomically with its
  EVENT_CONFIRM; charon may send an event just before the confirm, which the
  `vici` client silently drops, so tests here stay deterministic;
- packet types a client must not send are logged and ignored (no reply);
- a frame over 512 KiB closes the connection;
- `list-sas` sends one `list-sa` event per IKE_SA (only to the asking
  connection, only if it registered for `list-sa`), then an empty response;
  the child filters never hide an IKE_SA, only its CHILD_SAs;
- a message over 512 KiB is discarded, not sent (vici_socket.c send_(): "vici
  message size ... exceeds maximum size"), counted in `server.discarded`: a
  `list-sa` event of an IKE_SA with ~1,300 CHILD_SAs or more never arrives,
  while the command's response still does.

Typical use::

    with ViciTestServer(tmp_path / "charon.vici") as server:
        server.sas = [{"gw": {"uniqueid": "1", "child-sas": {...}}}]
        ... start the code under test on server.path ...
        assert server.wait_registered("child-updown")
        server.emit("child-updown", {"up": "yes", "gw": {...}})
    assert not server.errors

Commands other than `version` and `list-sas` can be served by adding
`server.commands[name] = fn`, where `fn(request: dict) -> dict` (request
values are str if valid UTF-8, else bytes). A handler that raises (or a
malformed `server.sas`) is recorded in `server.errors` and answered with
success=no.
"""

import copy
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

# Packet types.
CMD_REQUEST, CMD_RESPONSE, CMD_UNKNOWN = 0, 1, 2
EVENT_REGISTER, EVENT_UNREGISTER, EVENT_CONFIRM, EVENT_UNKNOWN, EVENT = 3, 4, 5, 6, 7
# Message element types.
SECTION_START, SECTION_END, KEY_VALUE, LIST_START, LIST_ITEM, LIST_END = 1, 2, 3, 4, 5, 6

MAX_FRAME = 512 * 1024

#: Events charon 5.9.8 registers (vici_query.c, vici_control.c, vici_logger.c,
#: vici_authority.c).
KNOWN_EVENTS = frozenset({
    "log", "control-log", "list-sa", "list-policy", "list-conn", "list-cert",
    "list-authority", "ike-updown", "ike-rekey", "ike-update",
    "child-updown", "child-rekey",
})

DEFAULT_VERSION = {
    "daemon": "charon",
    "version": "5.9.8",
    "sysname": "Linux",
    "release": "6.1.0-28-amd64",
    "machine": "x86_64",
}


class ProtocolError(ValueError):
    """Bytes that violate the VICI wire format."""


# ---------------------------------------------------------------- encoding

def _name(name) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if len(raw) > 255:
        raise ValueError(f"VICI name longer than 255 bytes: {name!r}")
    return bytes([len(raw)]) + raw


def _value(value) -> bytes:
    if isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        raw = str(value).encode()
    else:
        raise TypeError(f"VICI values are str or bytes, not {type(value).__name__}")
    if len(raw) > 0xFFFF:
        raise ValueError("VICI value longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def encode_message(message: dict) -> bytes:
    """Encode a dict (nested dicts = sections, lists = lists) as a message."""
    out = bytearray()
    for key, value in message.items():
        if isinstance(value, dict):
            out += bytes([SECTION_START]) + _name(key) + encode_message(value)
            out.append(SECTION_END)
        elif isinstance(value, (list, tuple)):
            out += bytes([LIST_START]) + _name(key)
            for item in value:
                out += bytes([LIST_ITEM]) + _value(item)
            out.append(LIST_END)
        else:
            out += bytes([KEY_VALUE]) + _name(key) + _value(value)
    return bytes(out)


def encode_packet(ptype: int, name: str | None = None, message: dict | None = None) -> bytes:
    """A complete frame: length, packet type, optional name, optional message."""
    body = bytes([ptype])
    if name is not None:
        body += _name(name)
    if message is not None:
        body += encode_message(message)
    return struct.pack("!I", len(body)) + body


# ---------------------------------------------------------------- decoding

def _text(raw: bytes):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def more(self) -> bool:
        return self.pos < len(self.data)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(f"truncated at byte {self.pos} (need {n})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def name(self) -> str:
        raw = self.take(self.byte())
        if not raw.isascii():
            raise ProtocolError(f"non-ASCII name {raw!r}")
        return raw.decode("ascii")

    def value(self):
        (n,) = struct.unpack("!H", self.take(2))
        return _text(self.take(n))


def decode_message(data: bytes) -> dict:
    """Strictly decode a message; raise ProtocolError on any violation."""
    reader = _Reader(data)
    root: dict = {}
    stack = [root]
    while reader.more():
        kind = reader.byte()
        current = stack[-1]
        if kind in (SECTION_START, KEY_VALUE, LIST_START):
            key = reader.name()
            if key in current:
                raise ProtocolError(f"duplicate key {key!r}")
            if kind == SECTION_START:
                current[key] = {}
                stack.append(current[key])
            elif kind == KEY_VALUE:
                current[key] = reader.value()
            else:
                items = current[key] = []
                while (item := reader.byte()) == LIST_ITEM:
                    items.append(reader.value())
                if item != LIST_END:
                    raise ProtocolError(f"element type {item} inside list {key!r}")
        elif kind == SECTION_END:
            if len(stack) == 1:
                raise ProtocolError("SECTION_END without open section")
            stack.pop()
        else:
            raise ProtocolError(f"element type {kind} outside a list")
    if len(stack) != 1:
        raise ProtocolError("unterminated section")
    return root


# ---------------------------------------------------------------- server

class LogEntry(NamedTuple):
    """One thing a client did: kind is command/register/unregister/connect/disconnect."""
    kind: str
    name: str | None
    message: dict | None
    conn: int


class _Conn:
    def __init__(self, sock: socket.socket, number: int):
        self.sock, self.number = sock, number
        self.events: list[str] = []       # one entry per registration
        self.discarded = 0
        self.send_lock = threading.Lock()

    def send(self, frame: bytes) -> bool:
        if len(frame) - 4 > MAX_FRAME:  # charon's limit is on the packet, without its length
            self.discarded += 1
            return False
        with self.send_lock:
            try:
                self.sock.sendall(frame)
                return True
            except OSError:
                return False

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class ViciTestServer:
    """Fake charon VICI endpoint on a unix socket, served from threads."""

    def __init__(self, path):
        self.path = str(path)
        self.version = dict(DEFAULT_VERSION)
        self.sas: list[dict] = []
        self._child_index: tuple[dict, int, dict[int, list[str]]] | None = None  # (children, its size, index)
        self.log: list[LogEntry] = []
        self.errors: list[str] = []
        self.commands: dict[str, Callable[[dict], dict]] = {"version": lambda _: self.version, "stats": self._stats}
        self._conns: dict[int, _Conn] = {}
        self._next_conn = 1
        self._cond = threading.Condition()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._discarded = 0  # by connections since closed

    # -- lifecycle
    def start(self) -> "ViciTestServer":
        self.resume()
        return self

    def stop(self):
        self.pause()
        self.drop_connections()
        with self._cond:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def pause(self, stale: bool = False):
        """Stop accepting, as when charon is dead: the socket file is removed
        (connect -> FileNotFoundError), or with stale=True left in place
        (ConnectionRefusedError), which is what charon 5.9.8 leaves on exit."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            # accept()'s poll keeps the socket alive until its timeout ends
            self._acceptor.join(5)
        if not stale and os.path.exists(self.path):
            os.unlink(self.path)

    def resume(self):
        """Accept connections again (a restarted charon)."""
        if self._listener is not None:
            return
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._acceptor = self._spawn(self._accept_loop, listener)

    def drop_connections(self):
        """Close every client connection, as charon does when it exits."""
        with self._cond:
            conns = list(self._conns.values())
        for conn in conns:
            conn.close()
        with self._cond:
            self._cond.wait_for(lambda: not any(c in self._conns.values() for c in conns), 5)

    # -- what tests drive
    def emit(self, event: str, message: dict) -> int:
        """Send an event to every registration for it; returns frames sent."""
        return self._broadcast(event, encode_packet(EVENT, event, message))

    def send_raw(self, data: bytes, event: str | None = None) -> int:
        """Send bytes as-is to connections registered for `event` (any if None)."""
        with self._cond:
            targets = [c for c in self._conns.values()
                       if c.events and (event is None or event in c.events)]
        return sum(conn.send(data) for conn in targets)

    def registered(self, event: str) -> int:
        """How many registrations for `event` exist right now."""
        with self._cond:
            return self._count(event)

    def wait_registered(self, event: str, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count(event) > 0, timeout)

    def wait_log(self, kind: str, name: str | None = None, count: int = 1,
                 timeout: float = 5.0) -> bool:
        """Wait until `count` log entries of that kind (and name) exist."""
        def enough():
            return sum(1 for e in self.log if e.kind == kind
                       and (name is None or e.name == name)) >= count
        with self._cond:
            return self._cond.wait_for(enough, timeout)

    def requests(self, command: str) -> list[dict]:
        """Messages of every `command` request received so far."""
        return [e.message for e in self.log if e.kind == "command" and e.name == command]

    @property
    def discarded(self) -> int:
        """Messages over 512 KiB not sent, on every connection so far."""
        with self._cond:
            return self._discarded + sum(c.discarded for c in self._conns.values())

    @property
    def connections(self) -> int:
        with self._cond:
            return len(self._conns)

    # -- internals
    def _count(self, event):
        return sum(c.events.count(event) for c in self._conns.values())

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"vici-test-{target.__name__}")
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _record(self, kind, name, message, conn):
        with self._cond:
            self.log.append(LogEntry(kind, name, message, conn.number))
            self._cond.notify_all()

    def _error(self, conn, text):
        with self._cond:
            self.errors.append(f"conn {conn.number}: {text}")
            self._cond.notify_all()

    def _broadcast(self, event, frame, only: "_Conn | None" = None) -> int:
        with self._cond:
            targets = [c for c in self._conns.values() for e in c.events
                       if e == event and (only is None or c is only)]
        return sum(conn.send(frame) for conn in targets)

    def _accept_loop(self, listener):
        while self._listener is listener:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._cond:
                conn = _Conn(sock, self._next_conn)
                self._next_conn += 1
                self._conns[conn.number] = conn
            self._record("connect", None, None, conn)
            self._spawn(self._serve, conn)

    def _recv_exact(self, conn, n) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = conn.sock.recv(n - len(data))
            except OSError:
                return None
            if not chunk:
                if data:
                    self._error(conn, "connection closed inside a frame")
                return None
            data += chunk
        return data

    def _serve(self, conn):
        try:
            while True:
                header = self._recv_exact(conn, 4)
                if header is None:
                    break
                (length,) = struct.unpack("!I", header)
                if length > MAX_FRAME:
                    self._error(conn, f"frame of {length} bytes exceeds 512 KiB")
                    break
                body = self._recv_exact(conn, length)
                if body is None:
                    break
                self._handle(conn, body)
        finally:
            conn.close()
            with self._cond:
                self._conns.pop(conn.number, None)
                self._discarded += conn.discarded
                self.log.append(LogEntry("disconnect", None, None, conn.number))
                self._cond.notify_all()

    def _handle(self, conn, body: bytes):
        reader = _Reader(body)
        try:
            ptype = reader.byte()
            if ptype not in (CMD_REQUEST, EVENT_REGISTER, EVENT_UNREGISTER):
                raise ProtocolError(f"packet type {ptype} is not for clients to send")
            name = reader.name()
            rest = body[reader.pos:]
            if ptype != CMD_REQUEST and rest:
                raise ProtocolError(f"{len(rest)} trailing bytes after event name")
        except ProtocolError as err:
            self._error(conn, str(err))
            return
        if ptype == CMD_REQUEST:
            self._command(conn, name, rest)
        else:
            self._registration(conn, name, ptype == EVENT_REGISTER)

    def _registration(self, conn, event, register):
        ok = event in KNOWN_EVENTS
        with self._cond:        # confirm first, so emit() never overtakes it
            if ok and register:
                conn.events.append(event)
            elif ok:
                ok = event in conn.events
                if ok:
                    conn.events.remove(event)
            conn.send(encode_packet(EVENT_CONFIRM if ok else EVENT_UNKNOWN))
        self._record("register" if register else "unregister", event, None, conn)

    def _command(self, conn, name, raw):
        try:
            request = decode_message(raw)
        except ProtocolError as err:
            self._error(conn, f"request {name!r}: {err}")
            request = {}
        self._record("command", name, request, conn)
        if name != "list-sas" and name not in self.commands:
            conn.send(encode_packet(CMD_UNKNOWN))
            return
        try:
            if name == "list-sas":
                response = self._list_sas(conn, request)
            else:
                response = self.commands[name](request)
        except Exception as err:    # a broken test handler or server.sas
            self._error(conn, f"handling {name!r}: {err!r}")
            response = {"success": "no", "errmsg": f"test server: {err!r}"}
        conn.send(encode_packet(CMD_RESPONSE, None, response))

    def _stats(self, _request) -> dict:
        """The part of charon's `stats` answer this server can know: its IKE_SAs."""
        return {"ikesas": {"total": str(sum(len(e) for e in self.sas)), "half-open": "0"}}

    def _by_uniqueid(self, children: dict) -> dict[int, list[str]]:
        """CHILD_SA keys by uniqueid, kept while the tests leave ``children`` as it is."""
        cached = self._child_index
        if cached is None or cached[0] is not children or cached[1] != len(children):
            index: dict[int, list[str]] = {}
            for key, sa in children.items():
                try:
                    index.setdefault(int(sa.get("uniqueid", 0)), []).append(key)
                except (TypeError, ValueError):
                    pass  # a malformed uniqueid matches no filter, as in charon
            self._child_index = cached = (children, len(children), index)
        return cached[2]

    def _list_sas(self, conn, request) -> dict:
        def number(key):
            try:
                return int(request.get(key, 0))
            except (TypeError, ValueError):
                return 0        # charon's get_int() falls back to "no filter"
        ike, child = request.get("ike"), request.get("child")
        ike_id, child_id = number("ike-id"), number("child-id")
        for entry in self.sas:
            for ike_name, ike_sa in entry.items():
                if ike is not None and ike != ike_name:
                    continue
                if ike_id and ike_id != int(ike_sa.get("uniqueid", 0)):
                    continue
                children = ike_sa.get("child-sas", {})
                # a hub's paging asks for one CHILD_SA of thousands, thousands of times: found by
                # uniqueid in an index (charon's own lookup is no scan either), copied after filtering
                keys = self._by_uniqueid(children).get(child_id, []) if child_id else children
                ike_sa = copy.deepcopy({k: v for k, v in ike_sa.items() if k != "child-sas"}) | {"child-sas": copy.deepcopy({
                    key: children[key] for key in keys
                    if (child is None or child == children[key].get("name", key.rsplit("-", 1)[0]))})}
                frame = encode_packet(EVENT, "list-sa", {ike_name: ike_sa})
                self._broadcast("list-sa", frame, only=conn)
        return {}
