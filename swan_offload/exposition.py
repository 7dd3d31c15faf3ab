"""/metrics over HTTP in Prometheus's text format (0.0.4), without prometheus_client's
exposition module: that module imports wsgiref, http.server, urllib and ssl, 10 MB of RSS
for a GET (issue 13's budget, bare.py). The output is byte for byte what its
``generate_latest`` writes for the same metric families (tests/test_metrics.py compares them).

The server answers GET /metrics (and /) with one collect() per request, one thread per
connection as prometheus_client's does, and gives up on a client silent for 30 s.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import cast

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # +Inf, NaN, Go's exponents: as prometheus_client writes them

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# OpenMetrics types written as the classic format's nearest
CLASSIC = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
SUFFIX = {"counter": "_total", "info": "_info"}
LATE = ("_created", "_gsum", "_gcount")  # OpenMetrics-only samples: a gauge of their own, after


def text(families: Iterable[Metric]) -> bytes:
    out: list[str] = []
    pairs: dict[tuple[str, str], str] = {}  # label="value", escaped once: values repeat on every series of an SA
    for m in families:
        name = m.name + SUFFIX.get(m.type, "")
        doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {CLASSIC.get(m.type, m.type)}\n")
        late: dict[str, list[str]] = {}
        special = {m.name + x: x for x in LATE}
        for s in m.samples:
            suffix = special.get(s.name)
            (out if suffix is None else late.setdefault(suffix, [])).append(_line(s, pairs))
        for suffix, lines in sorted(late.items()):
            out.append(f"# HELP {m.name}{suffix} {doc}\n# TYPE {m.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode()


def _line(s: Sample, pairs: dict[tuple[str, str], str]) -> str:
    stamp = f" {int(float(s.timestamp) * 1000):d}" if s.timestamp is not None else ""
    if not s.labels:
        return f"{s.name} {_go_float(s.value)}{stamp}\n"
    labels = ",".join([pairs.get(kv) or _pair(pairs, kv) for kv in sorted(s.labels.items())])
    return f"{s.name}{{{labels}}} {_go_float(s.value)}{stamp}\n"


def _pair(pairs: dict[tuple[str, str], str], kv: tuple[str, str]) -> str:
    pairs[kv] = f'{kv[0]}="{_escape(kv[1])}"'
    return pairs[kv]


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], family: int, collect: Callable[[], Iterable[Metric]]) -> None:
        self.address_family, self.collect = family, collect  # read by TCPServer's __init__
        super().__init__(addr, _Handler)


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self) -> None:
        try:
            request = self.rfile.readline(8192).split()
            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing the answer depends on
        except OSError:
            return
        if len(request) < 2:
            return self._answer(400, b"bad request\n", "text/plain")
        if request[0] != b"GET":
            return self._answer(405, b"only GET\n", "text/plain")
        if request[1].split(b"?")[0] not in (b"/metrics", b"/"):
            return self._answer(404, b"try /metrics\n", "text/plain")
        server: _Server = self.server  # type: ignore[assignment]
        self._answer(200, text(server.collect()), CONTENT_TYPE)

    def _answer(self, code: int, body: bytes, ctype: str) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
        head = f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            self.wfile.write(head.encode() + body)
        except OSError:
            pass  # the scraper went away


def serve(collect: Callable[[], Iterable[Metric]], host: str, port: int) -> tuple[socketserver.TCPServer, threading.Thread]:
    """Serve collect()'s families on host:port (port 0: any free one; an IPv6 host too)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server = _Server((host, port), family, collect)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread
