"""XFRM requests packed with ``struct``, from the declarations of ``messages``.

pyroute2's encoder takes ~95 us per NEWSA natively, ~2 ms under the lab's emulation, and a
hub's promotion or device-loss restore sends 20,000 of them: the restore of 1,000 CHILD_SAs
spent most of its seconds there. This packs the same message classes (their flat field
lists and attribute map) in one ``struct`` call per part. ``tests/test_xfrm_messages.py``
checks it byte for byte against pyroute2 for every attribute the agent sends; a message it
does not know (a type of attribute it has no rule for) is left to pyroute2.
"""

from __future__ import annotations

import functools
import struct
import sys
from typing import Any

from pyroute2.netlink import nla

from . import messages as m

_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_SCALARS = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q"}


class Unpackable(KeyError):
    """A message this module has no rule for: pyroute2 encodes it."""


class Plain(dict[str, Any]):
    """A message's values in a plain dict, for ``encode``: building the pyroute2 object of a
    NEWSA costs about as much as packing it. ``cls`` is the message class it stands for."""

    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def __repr__(self) -> str:  # its values hold the SA's keys
        return f"<{self.cls.__name__}: {len(self)} values>"

    def full(self) -> Any:
        """The pyroute2 message of these values (for what ``encode`` cannot pack)."""
        msg = self.cls()
        for k, v in self.items():
            msg[k] = v
        return msg


@functools.cache
def _layout(fields: tuple[Any, ...]) -> tuple[struct.Struct, tuple[tuple[str, str, bool], ...]]:
    """One native struct for a flat field list; big-endian fields (">H") are packed as native
    ones of the byte-swapped value, so a single call packs the whole part."""
    fmt, names = "=", []
    for name, f in fields:
        if f.endswith("x"):
            fmt += f
            continue
        big = f.startswith(">")
        f = f.lstrip(">")
        fmt += f
        names.append((name, f, big))
    return struct.Struct(fmt), tuple(names)


def _value(obj: Any, name: str, f: str, big: bool) -> Any:
    v = dict.get(obj, name)
    if f.endswith("s"):
        return bytes(v or b"")
    v = v or 0
    if big:
        size = struct.calcsize(f)
        v = int.from_bytes(int(v).to_bytes(size, "big"), sys.byteorder)
    return v


def _fields(fields: tuple[Any, ...], obj: Any) -> bytes:
    st, names = _layout(tuple(fields))
    return st.pack(*(_value(obj, n, f, big) for n, f, big in names))


@functools.cache
def _attr_map(cls: Any) -> dict[str, tuple[int, str]]:
    return {name: (code, kind) for code, name, kind in cls.nla_map}


def _attr(cls: Any, name: str, value: Any) -> bytes:
    try:
        code, kind = _attr_map(cls)[name]
    except KeyError:
        raise Unpackable(name) from None
    if kind in _SCALARS:
        payload = struct.pack("=" + _SCALARS[kind], value)
    else:
        found = getattr(cls, kind, None)
        if not (isinstance(found, type) and issubclass(found, nla)):  # "hex" and the like: pyroute2's own rules
            raise Unpackable(kind)
        sub: Any = found
        payload = _fields(sub.fields, value)
        if issubclass(sub, m._tailed):
            payload += bytes(dict.get(value, sub.tail) or b"")
            payload += b"\0" * ((-len(payload)) % 4)
    return _NLA.pack(4 + len(payload), code) + payload + b"\0" * ((-len(payload)) % 4)


def encode(msg: Any, mtype: int, flags: int, seq: int, pid: int) -> bytes:
    """The whole netlink message (header included) pyroute2 would encode for ``msg``."""
    cls: Any = msg.cls if isinstance(msg, Plain) else type(msg)
    body = _fields(cls.fields, msg) + b"".join(_attr(cls, name, value) for name, value in dict.get(msg, "attrs") or ())
    return _HDR.pack(_HDR.size + len(body), mtype, flags, seq, pid) + body
