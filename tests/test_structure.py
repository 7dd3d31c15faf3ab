"""The module boundaries issue 13 asks for, checked on the source: a field read across them
is how the daemon and the reconciler grew into each other before."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from swan_offload.reconciler import Reconciler

PKG = Path(__file__).resolve().parent.parent / "swan_offload"


def _uses(tree: ast.AST, owner: str) -> set[str]:
    """Names read off ``self.<owner>`` anywhere in ``tree``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if inner.attr == owner and isinstance(inner.value, ast.Name) and inner.value.id == "self":
                out.add(node.attr)
    return out


def test_the_daemon_calls_the_reconciler_and_reads_none_of_its_fields():
    used = _uses(ast.parse((PKG / "daemon.py").read_text()), "reconciler")
    assert used, "the daemon drives the reconciler"
    fields = {n for n in used if not inspect.isfunction(getattr(Reconciler, n, None))}
    assert fields == set(), f"daemon.py reads Reconciler fields {sorted(fields)}: give it a method, or a collaborator of its own"


def test_the_vocabulary_imports_nothing_of_the_package():
    tree = ast.parse((PKG / "vocab.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith(("swan_offload", ".")) or m == ""}, imported


def test_the_agent_imports_no_http_stack_and_no_prometheus_exposition():
    """prometheus_client's __init__ and exposition module import wsgiref, http.server, urllib
    and ssl: 10 MB of a 10,000 hub's 150 MB. The agent (imports, serving /metrics once) holds
    the metric families and its own text writer; the package still answers whoever asks it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import swan_offload.cli, swan_offload.daemon\n"
        "from swan_offload import metrics\n"
        "s, t = metrics.exposition.serve(lambda: [], '127.0.0.1', 0)\n"
        "import socket; c = socket.create_connection(s.server_address); c.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n'); print(c.recv(100).split()[1].decode()); s.shutdown()\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('http', 'wsgiref', 'ssl', 'email') or m.startswith('prometheus_client.')))\n"
        "from prometheus_client import start_http_server\n"
        "print(start_http_server.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PKG.parent).stdout.splitlines()
    assert len(out) == 3 and out[0] == "200", out
    loaded = ast.literal_eval(out[1])
    light = {f"prometheus_client.{m}" for m in ("metrics_core", "registry", "samples", "utils", "validation")}
    assert loaded and set(loaded) <= light, loaded
    assert out[2] == "prometheus_client.exposition", out


def test_the_agent_loads_two_pyroute2_base_classes_not_all_of_pyroute2():
    """pyroute2's own __init__ imports every netlink family it has: 20 MB of RSS, most of
    issue 13's budget. A fresh agent process (imports, a device read) holds only the
    netlink core; anyone asking pyroute2 for a name still gets the real package."""
    import subprocess
    import sys

    code = (
        "import sys, swan_offload.cli, swan_offload.daemon\n"
        "from swan_offload.backend import NetlinkBackend\n"
        "NetlinkBackend().devices()\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))\n"
        "from pyroute2 import IPRoute\n"
        "import pyroute2\n"
        "print(IPRoute.__module__, pyroute2.__version__, 'pyroute2.ndb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PKG.parent).stdout.splitlines()
    loaded = ast.literal_eval(out[0])
    assert "pyroute2.netlink" in loaded and len(loaded) <= 8, loaded
    assert not any(m.startswith(("pyroute2.iproute", "pyroute2.ndb", "pyroute2.ipdb")) for m in loaded), loaded
    assert out[1].startswith("pyroute2.iproute") and out[1].endswith("True")
