"""Inside the lab VM: what charon holds against what the kernel holds, as one JSON line.

    python tests/lab/jobs/check.py NS [--once]

Reads charon over VICI (/run/NS/charon.vici) and the kernel of netns NS over XFRM
netlink, and prints the invariants the lab scenarios assert on: every SA of an
installed CHILD_SA present exactly once, no state charon does not know, no agent
object without a live CHILD_SA, no probe state left. No key material is printed.

The two reads are not atomic: while charon runs a rekey exchange it holds SAs it
does not list yet. A snapshot that breaks an invariant is retaken (up to 8 times,
0.5 s apart); a leak persists, charon's own transients do not. "attempts" says how
many reads it took.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from swan_offload import planner as pl
from swan_offload.backend import NetlinkBackend
from swan_offload.mirror import is_larval
from swan_offload.vici_source import list_children
from swan_offload.xfrm import constants as c

DIRS = {c.XFRM_POLICY_IN: "in", c.XFRM_POLICY_OUT: "out", c.XFRM_POLICY_FWD: "fwd"}


def snapshot(ns: str) -> dict:
    children = list_children(f"/run/{ns}/charon.vici")
    b = NetlinkBackend(ns)
    states, policies = b.dump_states(), b.dump_policies()
    # the kernel's acquire placeholders (no algorithm, no key; xfrm_state_find makes one when a
    # packet meets an OUT policy with no SA, and it expires by xfrm_acq_expires, 30 s): nobody's
    # SA, counted apart. An offloaded twin meets none in a rekey's swap of one datagram, but
    # under traffic a spi-0 one can outlive the NEWSA that should clear it (not traced)
    larval = [s for s in states if is_larval(s)]
    states = [s for s in states if not is_larval(s)]
    # an SA is its (daddr, spi): the same SPI towards another address is another SA
    known = {(ch.local_host, ch.spi_in) for ch in children} | {(ch.remote_host, ch.spi_out) for ch in children}
    installed = [ch for ch in children if ch.state == "INSTALLED"]
    live_reqids = {ch.reqid for ch in children}
    spis = Counter((s.daddr, s.spi) for s in states if s.proto == c.IPPROTO_ESP)
    agent = [p for p in policies if pl.is_agent_policy(p)]
    return {
        "children": [
            {"ike": ch.ike_name, "child": ch.name, "uniqueid": ch.uniqueid, "reqid": ch.reqid, "state": ch.state,
             "mode": ch.mode, "esn": ch.esn, "spi_in": f"{ch.spi_in:08x}", "spi_out": f"{ch.spi_out:08x}"}
            for ch in children
        ],  # fmt: skip
        "states": [
            {"spi": f"{s.spi:08x}", "daddr": s.daddr, "reqid": s.reqid, "mode": s.mode,
             "offload": s.offload.mode if s.offload else None, "packets": s.curlft.packets,
             "dev": s.offload.ifindex if s.offload else None, "mark": [s.mark.value, s.mark.mask] if s.mark else None}
            for s in states
        ],  # fmt: skip
        # SAs of installed CHILD_SAs missing from the kernel, or present more than once
        "missing": sorted(f"{k[1]:08x}" for ch in installed for k in ((ch.local_host, ch.spi_in), (ch.remote_host, ch.spi_out)) if spis[k] == 0),
        "duplicate": sorted(f"{spi:08x}" for (_d, spi), n in spis.items() if n > 1),
        # ESP states charon does not hold (probe states included)
        "orphan_states": sorted(f"{s.spi:08x}" for s in states if s.proto == c.IPPROTO_ESP and (s.daddr, s.spi) not in known),
        "probe_states": sum(1 for s in states if pl.is_probe_state(s)),
        "larval": sorted(f"{s.spi:08x}" for s in larval),
        "agent_policies": [_policy(p) for p in agent],
        # agent policies for a reqid charon no longer has
        "stale_agent_policies": [_policy(p) for p in agent if p.templates and not {t.reqid for t in p.templates} & live_reqids],
        "charon_policies": [_policy(p) for p in policies if not pl.is_agent_policy(p)],
    }


def _policy(p) -> dict:  # type: ignore[no-untyped-def]
    return {
        "what": p.describe(),
        "dir": DIRS.get(p.dir, str(p.dir)),
        "priority": p.priority,
        "reqids": [t.reqid for t in p.templates],
        "offload": p.offload.mode if p.offload else None,
    }


PROBLEMS = ("missing", "duplicate", "orphan_states", "stale_agent_policies")


def settled(ns: str, tries: int = 8) -> dict:
    for attempt in range(1, tries + 1):  # noqa: B007 - read after the loop
        snap = snapshot(ns)
        if not any(snap[k] for k in PROBLEMS) and not snap["probe_states"]:
            break
        time.sleep(0.5)
    snap["attempts"] = attempt
    return snap


if __name__ == "__main__":
    # --once: one read, as things are this instant (transients included)
    print(json.dumps(snapshot(sys.argv[1]) if "--once" in sys.argv[2:] else settled(sys.argv[1])))
