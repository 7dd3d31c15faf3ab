"""The agent's work for one event at hub scale: the scoped plan against a full resync.

Pure Python on the in-memory kernel (no netlink, no charon): N CHILD_SAs already in packet
offload, in either hub shape (``spokes``: N IKE_SAs with one CHILD_SA each; ``one``: one
IKE_SA with N CHILD_SAs). One event is a CHILD_SA rekeyed: charon's two new SAs appear (as
the kernel mirror would learn them), the new CHILD_SA is listed, and the agent offloads it.
Times, in one run, per N:

  event   Reconciler.reconcile_scope of what the event names (the shipped path), median of 20
  full    Reconciler.reconcile of everything, as every event cost before (one run)

and prints event's ratio to the smallest N's (1.0 = independent of N) and full/event.
The lab's bench/scale.py measures the whole path (VICI, netlink, charon) at smaller N.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plan import ETH, hub  # noqa: E402
from swan_offload import config  # noqa: E402
from swan_offload import mirror as mi  # noqa: E402
from swan_offload.backend import MemoryBackend  # noqa: E402
from swan_offload.capability import KernelCaps  # noqa: E402
from swan_offload.charon_mirror import CharonMirror, Scope  # noqa: E402
from swan_offload.model import ChildSA, IkeSA, SaList  # noqa: E402
from swan_offload.reconciler import Reconciler  # noqa: E402

CAPS = KernelCaps(True, "bench", "6.12")


def rig(n: int, shape: str) -> tuple[Reconciler, CharonMirror, list[ChildSA], MemoryBackend]:
    children, view = hub(n)
    if shape == "spokes":  # IKE_SA i holds CHILD_SA i
        children = [replace(ch, ike_name=f"s{i}", ike_uniqueid=i + 1) for i, ch in enumerate(children)]
    k = MemoryBackend()
    k.addresses["192.0.2.1"] = ETH
    k.names[ETH.name] = ETH
    for s in view.states.values():
        k.states[mi.state_key(s)] = s
    for p in view.policies:
        k.policies[(p.sel, p.dir, p.mark, p.if_id)] = p
    r = Reconciler(k, config.Config(), CAPS)
    r.mirror_fed = True
    ikes = {ch.ike_uniqueid: IkeSA(ch.ike_name, ch.ike_uniqueid, "ESTABLISHED", "192.0.2.1", 500, "192.0.2.2", 500) for ch in children}
    sas = SaList(children=list(children), ikes=list(ikes.values()))
    charon = CharonMirror()
    charon.load(sas)
    r.reconcile(sas)
    return r, charon, children, k


def rekey(r: Reconciler, charon: CharonMirror, k: MemoryBackend, old: ChildSA, serial: int) -> float:
    """charon installs the successor's SAs (the mirror learns them), the event names old and
    new; returns the seconds reconcile_scope takes."""
    new = replace(old, uniqueid=old.uniqueid + 1_000_000 * serial, spi_in=old.spi_in ^ (serial << 20), spi_out=old.spi_out ^ (serial << 20))
    for key, spi in (((old.remote_host, old.spi_out, 50), new.spi_out), ((old.local_host, old.spi_in, 50), new.spi_in)):
        base = k.states[key]
        st = replace(base, spi=spi, offload=None)
        k.states[mi.state_key(st)] = st
        r.mirror.apply(mi.Change("state", st, mi.state_key(st), frozenset({st.reqid})))
    r.mirror.take_touched()  # the daemon turned these into the scope below
    scope = Scope(children={(old.ike_uniqueid, old.uniqueid), (new.ike_uniqueid, new.uniqueid)})
    answer = SaList(children=[replace(old, state="REKEYED"), new], ikes=[charon.ikes[old.ike_uniqueid]])
    t = time.perf_counter()
    charon.update(scope, answer)
    r.reconcile_scope(charon, scope)
    took = time.perf_counter() - t
    assert r.outcomes[new.key].mode == "packet", r.outcomes[new.key]
    return took


def measure(n: int, shape: str, events: int) -> tuple[float, float]:
    r, charon, children, k = rig(n, shape)
    step = max(1, n // events)
    times = [rekey(r, charon, k, children[(i * step) % n], i + 1) for i in range(events)]
    t = time.perf_counter()
    r.reconcile(charon.sa_list())
    full = time.perf_counter() - t
    return statistics.median(times), full


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--shape", choices=["spokes", "one", "both"], default="both")
    ap.add_argument("--events", type=int, default=20)
    args = ap.parse_args()
    shapes = ["spokes", "one"] if args.shape == "both" else [args.shape]
    print(f"{'shape':>7} {'N':>6} {'event ms':>9} {'vs smallest':>11} {'full s':>8} {'full/event':>10}")
    for shape in shapes:
        base = None
        for n in args.sizes:
            ev, full = measure(n, shape, args.events)
            base = base or ev
            print(f"{shape:>7} {n:>6} {ev * 1e3:>9.2f} {ev / base:>11.2f} {full:>8.3f} {full / ev:>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
