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
