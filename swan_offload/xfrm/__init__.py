"""XFRM netlink: constants, message classes, packing, the socket.

The message classes subclass pyroute2's ``nla``/``nlmsg`` (pyroute2.netlink). Importing
that subpackage runs pyroute2's top-level ``__init__`` first, which imports every family it
supports (IPRoute, NDB, IPDB, conntrack, nftables, asyncio...): 20 MB of the agent's RSS for
two base classes, most of issue 13's 150 MB budget at 10,000 CHILD_SAs. So unless pyroute2
is already imported, its package is registered bare (its path, no ``__init__``): submodules
import as usual, and the first name asked of the package itself (``from pyroute2 import
IPRoute``) runs the real ``__init__`` then, so callers see pyroute2 as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def _bare_pyroute2() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not installed as a package: the import error comes where it is used
    pkg = types.ModuleType("pyroute2")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__, pkg.__file__, pkg.__package__ = spec, spec.origin, "pyroute2"
    loader = spec.loader
    state = {"full": False}

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:  # a submodule: as any import would
            return importlib.import_module(f"pyroute2.{name}")
        if not state["full"]:
            state["full"] = True
            loader.exec_module(pkg)  # the real __init__, into this module: everything it exports
            if name in pkg.__dict__:
                return pkg.__dict__[name]
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = pkg


_bare_pyroute2()
