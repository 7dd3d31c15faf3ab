"""Planning cost at hub scale: the policy index against a scan of every policy.

Pure Python, no kernel: N CHILD_SAs of a hub (one local subnet, a /24 per spoke), with the
two states and in/out/fwd policies charon 5.9.8 installs for each, planned into packet
offload. Times, in one run:

  index   planner.plan as shipped (policies indexed once per plan)
  scan    the same plan with every reqid and overlap query answered by scanning all
          policies, as the planner did before (only up to --scan-max: it grows as N^2)

and prints per N the time, the time per CHILD_SA, the ratio to the smallest N's per-child
time (1.0 = linear), and scan/index where both ran. ``--sizes`` picks N.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swan_offload import config  # noqa: E402
from swan_offload import planner as pl  # noqa: E402
from swan_offload.model import ChildSA, TrafficSelector  # noqa: E402
from swan_offload.xfrm import constants as c  # noqa: E402
from swan_offload.xfrm import objects as o  # noqa: E402

KEY = o.Secret(bytes(20))
ETH = pl.Device(2, "eth0")


def hub(n: int) -> tuple[list[ChildSA], pl.KernelView]:
    children, states, policies = [], [], []
    for i in range(n):
        remote = f"10.{100 + (i >> 8)}.{i & 255}.0"
        ch = ChildSA("hub", 1, f"c{i}", i + 1, i + 1, "INSTALLED", "TUNNEL", "ESP", False, 0xC0000000 + i, 0xC1000000 + i,
                     "192.0.2.1", "192.0.2.2", 500, 500, (TrafficSelector("10.1.0.0/16"),), (TrafficSelector(f"{remote}/24"),))
        children.append(ch)
        for daddr, saddr, spi in (("192.0.2.2", "192.0.2.1", ch.spi_out), ("192.0.2.1", "192.0.2.2", ch.spi_in)):
            states.append(o.XfrmState(o.Selector(socket.AF_INET, "0.0.0.0", "0.0.0.0", 0, 0), daddr, spi, c.IPPROTO_ESP, saddr,
                                      socket.AF_INET, c.XFRM_MODE_TUNNEL, ch.reqid, replay_window=32,
                                      aead=o.Algo("rfc4106(gcm(aes))", KEY, 160, icv_len=128), replay=o.ReplayState()))
        prio = 400000 - (16 + 24) * 512 - 1
        out = o.Selector(socket.AF_INET, remote, "10.1.0.0", 24, 16)
        inn = o.Selector(socket.AF_INET, "10.1.0.0", remote, 16, 24)
        t_out = o.Template("192.0.2.2", ch.spi_out, c.IPPROTO_ESP, socket.AF_INET, "192.0.2.1", ch.reqid, c.XFRM_MODE_TUNNEL)
        t_in = o.Template("192.0.2.1", 0, c.IPPROTO_ESP, socket.AF_INET, "192.0.2.2", ch.reqid, c.XFRM_MODE_TUNNEL)
        policies += [o.XfrmPolicy(out, c.XFRM_POLICY_OUT, prio, templates=(t_out,)),
                     o.XfrmPolicy(inn, c.XFRM_POLICY_IN, prio, templates=(t_in,)),
                     o.XfrmPolicy(inn, c.XFRM_POLICY_FWD, prio, templates=(t_in,))]
    view = pl.KernelView.build(states, policies, addresses={"192.0.2.1": ETH}, devices={ETH.name: ETH})
    return children, view


class Scan:
    """The queries PolicyIndex answers, answered by scanning every policy (the old planner)."""

    def __init__(self, policies: list[o.XfrmPolicy]) -> None:
        self.policies = policies

    def charon(self, reqid: int) -> list[o.XfrmPolicy]:
        return [p for p in self.policies if not pl.is_agent_policy(p) and p.dir in (c.XFRM_POLICY_IN, c.XFRM_POLICY_OUT)
                and p.ptype == c.XFRM_POLICY_TYPE_MAIN and any(t.reqid == reqid for t in p.templates)]

    def agent(self, reqid: int) -> list[o.XfrmPolicy]:
        return [p for p in self.policies if pl.is_agent_policy(p) and any(t.reqid == reqid for t in p.templates)]

    def overlapping(self, p: o.XfrmPolicy) -> Iterator[o.XfrmPolicy]:
        for q in self.policies:
            if q is not p and not pl.is_agent_policy(q) and q.dir == p.dir and q.mark == p.mark and q.if_id == p.if_id and q.sel.overlaps(p.sel):
                yield q


def timed(children: list[ChildSA], view: pl.KernelView, scan: bool) -> float:
    view = pl.KernelView(**{f: getattr(view, f) for f in view.__dataclass_fields__})  # a fresh, unindexed copy
    if scan:
        view.__dict__["index"] = Scan(view.policies)
    t = time.perf_counter()
    plan = pl.plan(children, config.Config(), view)
    took = time.perf_counter() - t
    assert sum(p.target == pl.PACKET for p in plan.children) == len(children)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000])
    ap.add_argument("--scan-max", type=int, default=2000, help="largest N to plan the old way too")
    args = ap.parse_args()
    base = None
    print(f"{'N':>6} {'index s':>9} {'us/child':>9} {'vs smallest':>11} {'scan s':>9} {'scan/index':>10}")
    for n in args.sizes:
        children, view = hub(n)
        t = min(timed(children, view, False) for _ in range(3))
        per = t / n
        base = base or per
        line = f"{n:>6} {t:>9.3f} {per * 1e6:>9.1f} {per / base:>11.2f}"
        if n <= args.scan_max:
            s = timed(children, view, True)
            line += f" {s:>9.3f} {s / t:>10.1f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
