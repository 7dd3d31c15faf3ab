"""Reading lab job output: sections started by "== NAME" lines, JSON inside them."""

from __future__ import annotations

import json
import re
from typing import Any


def sections(out: str) -> dict[str, str]:
    parts = re.split(r"^== (\w+)$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def section_json(sec: dict[str, str], name: str) -> Any:
    """The section's JSON object: the whole section, or else its last line that is one."""
    text = sec[name].strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value
    raise ValueError(f"no JSON in section {name}: {text[-500:]}")


def detail(res: Any) -> str:
    return f"rc={res.rc} after {res.seconds:.0f} s\n{res.stdout[-8000:]}\n--stderr--\n{res.stderr[-3000:]}"


def ip_states(text: str) -> dict[str, str]:
    """`ip -s -d xfrm state` split per SA: {spi (8 hex digits): its lines}."""
    out = {}
    for block in re.split(r"^(?=src )", text, flags=re.M):
        m = re.search(r"proto esp spi 0x([0-9a-f]{8})", block)
        if m:
            out[m[1]] = block
    return out


def assert_consistent(snap: dict, where: str, why: str) -> None:
    """Every SA of charon's installed CHILD_SAs once in the kernel, nothing else, nothing of ours stale."""
    # what both sides held, first in the message: job output is cut to its tail
    why = f"children {json.dumps(snap.get('children'))}\nstates {json.dumps(snap.get('states'))}\nattempts {snap.get('attempts')}\n{why}"
    assert snap["missing"] == [], (where, snap["missing"], why)
    assert snap["duplicate"] == [], (where, snap["duplicate"], why)
    assert snap["orphan_states"] == [], (where, snap["orphan_states"], why)
    assert snap["probe_states"] == 0, (where, why)
    assert snap["stale_agent_policies"] == [], (where, snap["stale_agent_policies"], why)


def received(sec: str, n: int) -> bool:
    """busybox ping's summary says all n echo requests were answered."""
    return f"{n} packets transmitted, {n} packets received" in sec
