"""What the agent holds per CHILD_SA at hub scale, by structure (issue 13: RSS at 10,000).

Pure Python, no kernel: N CHILD_SAs of a hub (bench/plan.py: two states and in/out/fwd
policies each, as charon 5.9.8 installs them) encoded as the kernel's dump messages and
decoded by the agent's own decoder, so the objects are those a real dump gives; then one
full reconcile into packet offload on the in-memory kernel. Prints per N the bytes that
each long-lived structure holds (deep size, every object counted once, in the order
below) and the traced total, per CHILD_SA. ``--sizes`` picks N.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plan import ETH, hub  # noqa: E402
from swan_offload import config  # noqa: E402
from swan_offload import mirror as mi  # noqa: E402
from swan_offload.backend import MemoryBackend  # noqa: E402
from swan_offload.capability import KernelCaps  # noqa: E402
from swan_offload.charon_mirror import CharonMirror  # noqa: E402
from swan_offload.model import IkeSA, SaList  # noqa: E402
from swan_offload.reconciler import Reconciler  # noqa: E402
from swan_offload.xfrm import constants as c  # noqa: E402
from swan_offload.xfrm import objects as o  # noqa: E402
from swan_offload.xfrm.netlink import decode_messages  # noqa: E402


def redecoded(objs: list[Any], to_msg: Any, from_msg: Any, mtype: int) -> list[Any]:
    """Each object through the kernel's wire format and back: what a dump gives the agent."""
    out = []
    for x in objs:
        msg = to_msg(x)
        msg["header"] = {"type": mtype, "flags": 2, "sequence_number": 1, "pid": 0}
        msg.encode()
        out += [from_msg(m) for _t, _f, _s, _p, m in decode_messages(bytes(msg.data))]
    return out


def deep(root: Any, seen: set[int]) -> int:
    """Bytes reachable from root not yet in seen (shared objects counted once)."""
    total, todo = 0, [root]
    while todo:
        x = todo.pop()
        if id(x) in seen or isinstance(x, type):
            continue
        seen.add(id(x))
        total += sys.getsizeof(x)
        if isinstance(x, dict):
            todo += list(x.keys()) + list(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)) or hasattr(x, "__iter__") and isinstance(x, (__import__("collections").deque,)):
            todo += list(x)
        if hasattr(x, "__dict__") and not callable(x):
            todo.append(vars(x))
        for slot in getattr(type(x), "__slots__", ()):
            if hasattr(x, slot):
                todo.append(getattr(x, slot))
    return total


def measure(n: int) -> dict[str, int]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    children, view = hub(n)
    k = MemoryBackend()
    k.addresses["192.0.2.1"] = ETH
    k.names[ETH.name] = ETH
    for s in redecoded(list(view.states.values()), o.state_to_msg, o.state_from_msg, c.XFRM_MSG_NEWSA):
        k.states[mi.state_key(s)] = s
    for p in redecoded(view.policies, o.policy_to_msg, o.policy_from_msg, c.XFRM_MSG_NEWPOLICY):
        k.policies[(p.sel, p.dir, p.mark, p.if_id)] = p
    del view
    r = Reconciler(k, config.Config(), KernelCaps(True, "bench", "6.12"))
    r.mirror_fed = True
    ikes = {ch.ike_uniqueid: IkeSA(ch.ike_name, ch.ike_uniqueid, "ESTABLISHED", "192.0.2.1", 500, "192.0.2.2", 500) for ch in children}
    sas = SaList(children=list(children), ikes=list(ikes.values()))
    charon = CharonMirror()
    charon.load(sas)
    del sas, children, ikes
    r.reconcile(charon.sa_list())
    r.mirror.load(k.dump_states(), k.dump_policies())  # as the daemon's reload: the mirror holds the kernel's objects
    k.states.clear(), k.policies.clear()  # the in-memory kernel stands for the kernel's own memory
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    seen: set[int] = set()
    parts = {
        "kernel mirror": deep(r.mirror, seen),
        "charon mirror": deep(charon, seen),
        "ledger": deep(r.ledger, seen),
        "held copies": deep(r.held, seen),
    }
    deep(k, seen)  # the in-memory kernel's own records stand for the kernel's memory: not counted
    parts["reconciler rest"] = deep(r, seen)
    parts["traced"] = traced
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    for n in args.sizes:
        parts = measure(n)
        print(f"N={n}: " + ", ".join(f"{k} {v / 2**20:.1f} MB ({v / n:.0f} B/child)" for k, v in parts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
