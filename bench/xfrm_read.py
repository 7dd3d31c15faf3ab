"""Why a scrape (and the held-copy refresh) reads the kernel with one dump, never one request per SA.

Runs in a private network namespace on this machine's kernel (root needed). Installs N
policies (the host kernel has no ESP, so policies stand in for per-SA objects: same netlink
dump path, same per-object GET), then times, in one run:

  baseline   one XFRM_MSG_GETPOLICY dump of all N, parsed into objects
  per-object N XFRM_MSG_GETPOLICY requests, 50 per batch on one socket (what per-SA reads would cost)

and prints each as a ratio to the baseline. ``--sizes`` picks N (default 100 1000 4000).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swan_offload.backend import AddPolicy, NetlinkBackend  # noqa: E402
from swan_offload.xfrm import constants as c  # noqa: E402
from swan_offload.xfrm import objects as o  # noqa: E402
from swan_offload.xfrm.netlink import Request  # noqa: E402


def policies(n: int) -> list[o.XfrmPolicy]:
    out = []
    for i in range(n):
        sel = o.Selector(socket.AF_INET, f"10.{(i >> 8) & 255}.{i & 255}.0", "10.255.0.0", 24, 24)
        tmpl = o.Template("192.0.2.2", 0, c.IPPROTO_ESP, socket.AF_INET, "192.0.2.1", i + 1, c.XFRM_MODE_TUNNEL)
        out.append(o.XfrmPolicy(sel, c.XFRM_POLICY_OUT, 375000 + i, templates=(tmpl,)))
    return out


def best_of(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(ns: str, n: int, runs: int) -> None:
    b = NetlinkBackend(ns)
    try:
        pols = policies(n)
        for i in range(0, n, 500):
            errs = b.apply([AddPolicy(p) for p in pols[i : i + 500]])
            assert not any(errs), errs
        assert len(b.dump_policies()) == n
        def per_object() -> None:
            for i in range(0, n, 50):  # the receive buffer holds only so many replies and acks
                gets = [Request(c.XFRM_MSG_GETPOLICY, o.policy_id_to_msg(p.id), what="get policy") for p in pols[i : i + 50]]
                replies = b.sock.batch(gets)
                assert all(r.error is None for r in replies)
                [o.policy_from_msg(r.messages[0]) for r in replies]

        base = best_of(b.dump_policies, runs)
        each = best_of(per_object, runs)
        print(f"{n:>6}  baseline one dump {base * 1e3:8.1f} ms  per-object requests {each * 1e3:8.1f} ms  ratio {each / base:5.2f}x")
    finally:
        b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for n in args.sizes:
        ns = f"swoff-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            bench(ns, n, args.runs)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
