"""Inside the lab VM: move charon's SAs of one CHILD_SA the way the reconciler does
(DELSA + NEWSA of the same SPI in one batch, counters, add_time and sequence carried)
and print what the kernel holds before and after, as JSON (no keys)."""

import json
import sys

from swan_offload import planner as pl
from swan_offload.backend import AddState, DelState, NetlinkBackend

ns, reqid = sys.argv[1], int(sys.argv[2])
b = NetlinkBackend(ns)
states = [s for s in b.dump_states() if s.reqid == reqid]
out = {"before": [], "after": [], "errors": []}
ops = []
for s in states:
    outbound = s.replay is not None and s.replay.oseq > 0 or s.daddr.endswith(".2")
    out["before"].append({"spi": s.spi, "add_time": s.curlft.add_time, "packets": s.curlft.packets,
                          "oseq": s.replay.oseq if s.replay else None, "seq": s.replay.seq if s.replay else None})
    new = pl.moved_state(s, None, outbound, 1000)
    ops += [DelState(s.id), AddState(new)]
out["errors"] = [str(e) for e in b.apply(ops) if e is not None]
for s in b.dump_states():
    if s.reqid == reqid:
        out["after"].append({"spi": s.spi, "add_time": s.curlft.add_time, "packets": s.curlft.packets,
                             "oseq": s.replay.oseq if s.replay else None, "seq": s.replay.seq if s.replay else None})
print(json.dumps(out))
