"""The planner's policy index answers exactly what a scan of every policy answers."""

from __future__ import annotations

import random
import socket

import pytest

from swan_offload import planner as pl
from swan_offload.policy_index import PolicyIndex
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o


def random_policies(rng: random.Random, n: int) -> list[o.XfrmPolicy]:
    out = []
    for i in range(n):
        v6 = rng.random() < 0.3
        fam = socket.AF_INET6 if v6 else socket.AF_INET

        def net(v6: bool = v6) -> tuple[str, int]:
            plen = rng.choice([0, 8, 16, 24, 28, 32] if not v6 else [0, 32, 48, 64, 128])
            if v6:
                return f"fd00:{rng.randrange(4):x}:{rng.randrange(4):x}::", plen
            return f"10.{rng.randrange(4)}.{rng.randrange(4)}.{rng.randrange(4) * 16}", plen

        (d, dl), (s, sl) = net(), net()
        proto = rng.choice([0, 0, c.IPPROTO_UDP, socket.IPPROTO_TCP])
        dport = rng.choice([0, 0, 500, 4500]) if proto else 0
        sel = o.Selector(fam, d, s, dl, sl, proto=proto, dport=dport, dport_mask=0xFFFF if dport else 0,
                         user=pl.AGENT_TAG if rng.random() < 0.2 else 0)
        t = o.Template("192.0.2.2", 0, c.IPPROTO_ESP, fam, "192.0.2.1", rng.randrange(1, 30), c.XFRM_MODE_TUNNEL)
        out.append(o.XfrmPolicy(sel, rng.choice([c.XFRM_POLICY_IN, c.XFRM_POLICY_OUT, c.XFRM_POLICY_FWD]),
                                rng.randrange(1000), templates=(t,) if rng.random() < 0.8 else (),
                                mark=rng.choice([None, None, o.Mark(1, 0xFF)]), index=i))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_index_equals_a_scan_of_every_policy(seed):
    rng = random.Random(seed)
    pols = random_policies(rng, 400)
    idx = PolicyIndex(pols, pl.is_agent_policy)
    for p in pols:
        scan = {id(q) for q in pols if q is not p and not pl.is_agent_policy(q) and q.dir == p.dir
                and q.mark == p.mark and q.if_id == p.if_id and q.sel.overlaps(p.sel)}
        assert {id(q) for q in idx.overlapping(p)} == scan
    for reqid in range(1, 30):
        charon = [q for q in pols if not pl.is_agent_policy(q) and q.dir != c.XFRM_POLICY_FWD
                  and any(t.reqid == reqid for t in q.templates)]
        assert idx.charon(reqid) == charon
        assert idx.agent(reqid) == [q for q in pols if pl.is_agent_policy(q) and any(t.reqid == reqid for t in q.templates)]


@pytest.mark.parametrize("seed", range(3))
def test_index_kept_by_add_and_remove_answers_as_one_built_anew(seed):
    """The kernel mirror keeps one index for the agent's life, one notification at a time."""
    rng = random.Random(seed)
    pool = random_policies(rng, 300)
    idx = PolicyIndex(pool[:100], pl.is_agent_policy)
    present = list(pool[:100])
    for p in pool[100:]:
        if present and rng.random() < 0.4:
            gone = present.pop(rng.randrange(len(present)))
            idx.remove(gone)
        present.append(p)
        idx.add(p)
    fresh = PolicyIndex(present, pl.is_agent_policy)
    for p in pool:
        assert {id(q) for q in idx.overlapping(p)} == {id(q) for q in fresh.overlapping(p)}
    for reqid in range(1, 30):
        assert sorted(map(id, idx.charon(reqid))) == sorted(map(id, fresh.charon(reqid)))
        assert sorted(map(id, idx.agent(reqid))) == sorted(map(id, fresh.agent(reqid)))
