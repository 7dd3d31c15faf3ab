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
