"""XFRM messages packed and unpacked with ``struct``, from the declarations of ``messages``.

pyroute2's encoder takes ~95 us per NEWSA natively, ~2 ms under the lab's emulation, and its
decoder about as much; a hub's promotion sends 50,000 messages and hears as many
notifications, a device-loss restore sends 20,000 NEWSA, a resync dumps 60,000 objects.
This packs and unpacks the same message classes (their flat field lists and attribute map)
one ``struct`` call per part. ``encode`` gives pyroute2's bytes (tests check byte for byte,
every attribute the agent sends); ``decode`` gives what pyroute2's decoder gives as far as
objects.py reads it: fields by name, ``get_attr``, attributes as dicts (tests compare the
objects decoded both ways). What has no rule here is left to pyroute2 (``Unpackable``).
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


def _swap(v: int, f: str) -> int:
    """A big-endian field's value as the native one that has its bytes (both ways: a swap)."""
    return int.from_bytes(int(v).to_bytes(struct.calcsize(f), "big"), sys.byteorder)


def _value(obj: Any, name: str, f: str, big: bool) -> Any:
    v = dict.get(obj, name)
    if f.endswith("s"):
        return bytes(v or b"")
    return _swap(v or 0, f) if big else v or 0


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


class Decoded(Plain):
    """A message as ``decode`` reads it: fields by name, attributes in ``attrs``."""

    first: dict[str, Any]  # each attribute's first value, as get_attr answers (set by decode)

    def get_attr(self, name: str) -> Any:
        return self.first.get(name)


@functools.cache
def _codes(cls: Any) -> dict[int, tuple[str, str]]:
    return {code: (name, kind) for code, name, kind in getattr(cls, "nla_map", ())}


def _unpack_fields(fields: tuple[Any, ...], raw: bytes, off: int, into: dict[str, Any]) -> int:
    st, names = _layout(tuple(fields))
    if off + st.size > len(raw):
        raise ValueError(f"message truncated: {len(raw) - off} of {st.size} bytes of its struct")
    for (name, f, big), v in zip(names, st.unpack_from(raw, off)):
        into[name] = _swap(v, f) if big else v
    return st.size


def _attr_value(cls: Any, kind: str, payload: bytes) -> Any:
    if kind in _SCALARS:
        fmt = "=" + _SCALARS[kind]
        if len(payload) < struct.calcsize(fmt):
            raise ValueError(f"attribute of {len(payload)} bytes for a {kind}")
        return struct.unpack_from(fmt, payload)[0]
    if kind == "hex":  # pyroute2's rendering of opaque bytes
        return ":".join(f"{b:02x}" for b in payload)
    found = getattr(cls, kind, None)
    if not (isinstance(found, type) and issubclass(found, nla)):
        raise Unpackable(kind)
    sub: Any = found
    value: dict[str, Any] = {}
    size = _unpack_fields(sub.fields, payload, 0, value)
    if issubclass(sub, m._tailed):
        value[sub.tail] = payload[size:]
    return value


def decode(cls: Any, raw: bytes) -> Decoded:
    """One whole message (header included) of class ``cls``."""
    if len(raw) < _HDR.size:
        raise ValueError("message shorter than its header")
    end = min(_HDR.unpack_from(raw)[0], len(raw))
    out = Decoded(cls)
    pos = _HDR.size + _unpack_fields(cls.fields, raw, _HDR.size, out)
    attrs, codes = [], _codes(cls)
    pos = (pos + 3) & ~3
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(raw, pos)
        if alen < 4 or pos + alen > end:
            break
        named = codes.get(atype & 0x3FFF)  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if named is not None:
            attrs.append((named[0], _attr_value(cls, named[1], raw[pos + 4 : pos + alen])))
        pos += (alen + 3) & ~3
    out["attrs"] = attrs
    out.first = {}
    for name, value in attrs:
        out.first.setdefault(name, value)
    return out


def encode(msg: Any, mtype: int, flags: int, seq: int, pid: int) -> bytes:
    """The whole netlink message (header included) pyroute2 would encode for ``msg``."""
    cls: Any = msg.cls if isinstance(msg, Plain) else type(msg)
    body = _fields(cls.fields, msg) + b"".join(_attr(cls, name, value) for name, value in dict.get(msg, "attrs") or ())
    return _HDR.pack(_HDR.size + len(body), mtype, flags, seq, pid) + body
