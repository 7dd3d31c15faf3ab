"""The daemon's local control socket: ``swan-offload status`` asks the running daemon.

A unix stream socket, mode 0600 and owned by the daemon's user (root): status names every
connection, peer and SPI. One request line in (``status``), one JSON document out. A socket
left by a dead daemon is replaced; one a live daemon answers on is not (two agents would
fight over the same kernel objects).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("swan_offload.control")

COMMANDS = ("status",)
MAX_REQUEST = 256


class DaemonAbsent(Exception):
    """Nothing listens on the control socket."""


class ControlError(Exception):
    """The daemon answered with an error, or not in the protocol."""


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class ControlServer:
    """Answers status requests from a thread; ``handlers`` map a command to a JSON-able reply."""

    def __init__(self, path: str, handlers: dict[str, Callable[[], Any]]) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        """Bind (replacing a dead daemon's socket) and serve; OSError if another daemon answers."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise OSError(f"{self.path} exists and is not a socket")
            try:
                request(str(self.path), timeout=1.0)
            except (DaemonAbsent, ControlError, OSError):
                self.path.unlink()
            else:
                raise OSError(f"another swan-offload daemon answers on {self.path}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # never reachable by others, not even between bind and chmod
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        s.settimeout(0.5)
        self.sock = s
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        if self.thread:
            self.thread.join(timeout=2)
        if self.sock:
            self.sock.close()
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _serve(self) -> None:
        assert self.sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with conn:
                try:
                    self._answer(conn)
                except OSError as e:
                    log.debug("control client went away: %s", e)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        uid = _peer_uid(conn)
        if uid not in (0, os.geteuid()):
            conn.sendall(_line({"error": "permission denied"}))
            return
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        cmd = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
        handler = self.handlers.get(cmd)
        if handler is None:
            reply: Any = {"error": f"unknown command {cmd[:32]!r}; known: {', '.join(sorted(self.handlers))}"}
        else:
            try:
                reply = {"ok": handler()}
            except Exception as e:  # noqa: BLE001 - the daemon must outlive a bad request
                log.exception("control command %s failed", cmd)
                reply = {"error": f"{cmd} failed: {type(e).__name__}"}
        conn.sendall(_line(reply))


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def request(path: str, command: str = "status", timeout: float = 5.0) -> Any:
    """Ask the daemon; DaemonAbsent when nothing listens, ControlError on an error reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonAbsent(path) from e
        s.sendall(command.encode("ascii") + b"\n")
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError as e:
        raise ControlError(f"not a reply from swan-offload ({len(buf)} bytes)") from e
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply["ok"]
