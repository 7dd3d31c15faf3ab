"""Import a dependency's submodules without running its package ``__init__``.

Two of ours import far more than the agent uses from their top level: pyroute2's imports
every netlink family it has (IPRoute, NDB, IPDB, nftables, asyncio...: 20 MB of RSS for the
two base classes xfrm/ subclasses), prometheus_client's the WSGI/HTTP/SSL stack of its
exposition helpers (10 MB; the agent writes the text format itself, exposition.py). At
10,000 CHILD_SAs issue 13's budget is 150 MB. A bare package has the real one's path and no
``__init__``: submodules import as usual, and the first name asked of the package itself
(``from pyroute2 import IPRoute``) runs the real ``__init__`` then, so callers see the
package as it is. A package already imported is left alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def bare_package(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not installed as a package: the import error comes where it is used
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__, pkg.__file__, pkg.__package__ = spec, spec.origin, name
    loader = spec.loader
    state = {"full": False}

    def __getattr__(attr: str) -> Any:
        if not attr.startswith("__") and importlib.util.find_spec(f"{name}.{attr}") is not None:  # a submodule: as any import would
            return importlib.import_module(f"{name}.{attr}")
        if not state["full"]:
            state["full"] = True
            loader.exec_module(pkg)  # the real __init__, into this module: everything it exports
            if attr in pkg.__dict__:
                return pkg.__dict__[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = pkg
