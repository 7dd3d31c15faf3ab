"""Typed CHILD_SA model built from charon's VICI messages (5.9.x layout).

VICI gives every value as bytes and nests children under their IKE_SA; the
agent needs flat, validated CHILD_SA records. Anything malformed raises
:class:`MalformedMessage` naming the field, so one bad event never stops the
daemon and never loses the others.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class MalformedMessage(ValueError):
    """A VICI message that does not have the layout charon documents."""


def _s(v: Any, what: str) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError as e:
            raise MalformedMessage(f"{what}: not UTF-8") from e
    if isinstance(v, str):
        return v
    raise MalformedMessage(f"{what}: expected a value, got {type(v).__name__}")


def _opt(sec: Mapping[str, Any], key: str, where: str) -> str | None:
    return _s(sec[key], f"{where}.{key}") if key in sec else None


def _int(sec: Mapping[str, Any], key: str, where: str, base: int = 10, default: int | None = None) -> int:
    raw = _opt(sec, key, where)
    if raw is None or raw == "":
        if default is None:
            raise MalformedMessage(f"{where}: missing {key}")
        return default
    try:
        return int(raw, base)
    except ValueError as e:
        raise MalformedMessage(f"{where}.{key}: not a number: {raw!r}") from e


def _list(sec: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = sec.get(key, [])
    if not isinstance(v, (list, tuple)):
        raise MalformedMessage(f"{where}.{key}: expected a list")
    return tuple(_s(x, f"{where}.{key}") for x in v)


@dataclass(frozen=True)
class TrafficSelector:
    """One charon TS string: ``net[proto/port]`` or an address range."""

    text: str

    @property
    def family(self) -> int:
        return 6 if ":" in self.text.split("[")[0] else 4


@dataclass(frozen=True)
class ChildSA:
    ike_name: str
    ike_uniqueid: int
    name: str
    uniqueid: int
    reqid: int
    state: str
    mode: str
    protocol: str
    encap: bool
    spi_in: int
    spi_out: int
    local_host: str
    remote_host: str
    local_port: int
    remote_port: int
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    esn: bool = False
    mark_in: int = 0
    mark_mask_in: int = 0
    mark_out: int = 0
    mark_mask_out: int = 0
    if_id_in: int = 0
    if_id_out: int = 0
    encr_alg: str = ""
    encr_keysize: int = 0
    integ_alg: str = ""
    install_time: int = 0

    @property
    def key(self) -> tuple[str, int]:
        """Charon's identity of this CHILD_SA instance (a rekey makes a new one)."""
        return (self.ike_name, self.uniqueid)

    @property
    def label(self) -> str:
        return f"{self.ike_name}/{self.name}#{self.uniqueid}"

    @property
    def selectors(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (tuple(sorted(t.text for t in self.local_ts)), tuple(sorted(t.text for t in self.remote_ts)))


@dataclass(frozen=True)
class IkeSA:
    name: str
    uniqueid: int
    state: str
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    version: int = 2


def _addr(sec: Mapping[str, Any], key: str, where: str) -> str:
    raw = _opt(sec, key, where)
    if raw is None:
        raise MalformedMessage(f"{where}: missing {key}")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError as e:
        raise MalformedMessage(f"{where}.{key}: not an IP address: {raw!r}") from e


def parse_ike(name: str, sec: Mapping[str, Any]) -> IkeSA:
    where = f"ike {name}"
    if not isinstance(sec, Mapping):
        raise MalformedMessage(f"{where}: expected a section")
    return IkeSA(
        name=name,
        uniqueid=_int(sec, "uniqueid", where),
        state=_opt(sec, "state", where) or "",
        local_host=_addr(sec, "local-host", where),
        local_port=_int(sec, "local-port", where, default=500),
        remote_host=_addr(sec, "remote-host", where),
        remote_port=_int(sec, "remote-port", where, default=500),
        version=_int(sec, "version", where, default=2),
    )


def parse_child(ike: IkeSA, sec: Mapping[str, Any], where: str) -> ChildSA:
    if not isinstance(sec, Mapping):
        raise MalformedMessage(f"{where}: expected a section")
    return ChildSA(
        ike_name=ike.name,
        ike_uniqueid=ike.uniqueid,
        name=_opt(sec, "name", where) or "",
        uniqueid=_int(sec, "uniqueid", where),
        reqid=_int(sec, "reqid", where, default=0),
        state=_opt(sec, "state", where) or "",
        mode=(_opt(sec, "mode", where) or "TUNNEL").upper(),
        protocol=(_opt(sec, "protocol", where) or "ESP").upper(),
        encap=_opt(sec, "encap", where) == "yes",
        spi_in=_int(sec, "spi-in", where, 16, default=0),
        spi_out=_int(sec, "spi-out", where, 16, default=0),
        local_host=ike.local_host,
        remote_host=ike.remote_host,
        local_port=ike.local_port,
        remote_port=ike.remote_port,
        local_ts=tuple(TrafficSelector(t) for t in _list(sec, "local-ts", where)),
        remote_ts=tuple(TrafficSelector(t) for t in _list(sec, "remote-ts", where)),
        esn=_opt(sec, "esn", where) in ("1", "yes"),
        mark_in=_int(sec, "mark-in", where, 16, default=0),
        mark_mask_in=_int(sec, "mark-mask-in", where, 16, default=0),
        mark_out=_int(sec, "mark-out", where, 16, default=0),
        mark_mask_out=_int(sec, "mark-mask-out", where, 16, default=0),
        if_id_in=_int(sec, "if-id-in", where, 16, default=0),
        if_id_out=_int(sec, "if-id-out", where, 16, default=0),
        encr_alg=_opt(sec, "encr-alg", where) or "",
        encr_keysize=_int(sec, "encr-keysize", where, default=0),
        integ_alg=_opt(sec, "integ-alg", where) or "",
        install_time=_int(sec, "install-time", where, default=0),
    )


def _ike_sections(msg: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(msg, Mapping):
        raise MalformedMessage("message is not a section")
    for k, v in msg.items():
        if isinstance(v, Mapping):
            yield k, v


def _child_sections(msg: Mapping[str, Any]) -> Iterator[tuple[IkeSA, str, Any]]:
    """(IKE_SA, child key, child section) for every child of every IKE_SA in ``msg``."""
    for ike_name, sec in _ike_sections(msg):
        ike = parse_ike(ike_name, sec)
        kids = sec.get("child-sas", {})
        if not isinstance(kids, Mapping):
            raise MalformedMessage(f"ike {ike_name}.child-sas: expected a section")
        for cname, csec in kids.items():
            yield ike, cname, csec


def children_of(msg: Mapping[str, Any]) -> list[ChildSA]:
    """CHILD_SAs of a ``child-updown`` or ``list-sa`` message."""
    return [parse_child(ike, csec, f"ike {ike.name} child {cname}") for ike, cname, csec in _child_sections(msg)]


def rekeyed_children(msg: Mapping[str, Any]) -> list[tuple[ChildSA | None, ChildSA]]:
    """(old, new) pairs of a ``child-rekey`` message."""
    out = []
    for ike, cname, pair in _child_sections(msg):
        where = f"ike {ike.name} child {cname}"
        if not isinstance(pair, Mapping) or "new" not in pair:
            raise MalformedMessage(f"{where}: child-rekey without new")
        old = parse_child(ike, pair["old"], where + ".old") if "old" in pair else None
        out.append((old, parse_child(ike, pair["new"], where + ".new")))
    return out


def ikes_of(msg: Mapping[str, Any]) -> list[IkeSA]:
    """IKE_SAs of an ``ike-updown``/``ike-rekey``/``ike-update`` message (``new`` for rekeys)."""
    out = []
    for ike_name, sec in _ike_sections(msg):
        if "new" in sec and isinstance(sec["new"], Mapping):
            sec = sec["new"]
        out.append(parse_ike(ike_name, sec))
    return out
