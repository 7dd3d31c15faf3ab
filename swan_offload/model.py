"""Typed CHILD_SA model built from charon's VICI messages (5.9.x layout).

VICI gives every value as bytes and nests children under their IKE_SA; the
agent needs flat, validated CHILD_SA records. Anything malformed raises
:class:`MalformedMessage` naming the field, so one bad event never stops the
daemon and never loses the others.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """One charon TS string: ``net[proto/port]`` or an address range."""

    text: str

    @property
    def family(self) -> int:
        return 6 if ":" in self.text.split("[")[0] else 4


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass
class SaList:
    """What ``list-sas`` said: what could be read, and which IKE_SAs could not.

    An IKE_SA whose entry does not parse is *unreadable*, not gone: its CHILD_SAs keep their
    kernel objects as they are (their reqids, salvaged where possible, name its policies) until
    an entry for it parses again. ``unnamed`` counts entries that do not even name their IKE_SA:
    with one of those nothing may be retired at all.
    """

    children: list[ChildSA] = field(default_factory=list)
    ikes: list[IkeSA] = field(default_factory=list)
    # (IKE_SA name, its uniqueid if that much was readable) -> the reqids salvaged from its entry
    unreadable: dict[tuple[str, int | None], frozenset[int]] = field(default_factory=dict)
    unnamed: int = 0
    errors: list[str] = field(default_factory=list)  # one line per entry, naming the field
    # IKE_SAs charon holds but could not send whole (vici_source.VICI_MESSAGE_MAX), also unreadable
    discarded: set[tuple[str, int]] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.unnamed

    def add(self, msg: Any) -> None:
        """Take one ``list-sa`` event message (``{<ike-name>: {...}}``)."""
        if not isinstance(msg, Mapping):
            self.unnamed += 1
            self.errors.append(f"list-sa: message is not a section ({type(msg).__name__})")
            return
        for name, sec in msg.items():
            try:
                if not isinstance(name, str) or not isinstance(sec, Mapping):
                    raise MalformedMessage(f"ike {name!r}: expected a section")
                ike = parse_ike(name, sec)
                kids = [parse_child(ike, csec, f"ike {name} child {cname}") for _ike, cname, csec in _child_sections({name: sec})]
            except MalformedMessage as e:
                self.errors.append(str(e))
                if isinstance(name, str):
                    key = (name, _salvage_int(sec, "uniqueid"))
                    self.unreadable[key] = self.unreadable.get(key, frozenset()) | salvage_reqids(sec)
                else:
                    self.unnamed += 1
                continue
            self.ikes.append(ike)
            self.children.extend(kids)


def _salvage_int(sec: Any, key: str) -> int | None:
    try:
        return int(sec[key]) if isinstance(sec, Mapping) and isinstance(sec.get(key), bytes | str) else None
    except ValueError:
        return None


def salvage_reqids(sec: Any) -> frozenset[int]:
    """Every ``reqid`` readable anywhere under an IKE_SA entry that failed to parse.

    Best effort, for keeping that IKE_SA's kernel objects: its policies are recognised
    by reqid even when the entry as a whole is not understood.
    """
    out: set[int] = set()
    todo = [sec]
    while todo:
        x = todo.pop()
        if isinstance(x, Mapping):
            reqid = _salvage_int(x, "reqid")
            if reqid is not None:
                out.add(reqid)
            todo.extend(x.values())
    return frozenset(r for r in out if r > 0)


def ikes_of(msg: Mapping[str, Any]) -> list[IkeSA]:
    """IKE_SAs of an ``ike-updown``/``ike-rekey``/``ike-update`` message (``new`` for rekeys)."""
    out = []
    for ike_name, sec in _ike_sections(msg):
        if "new" in sec and isinstance(sec["new"], Mapping):
            sec = sec["new"]
        out.append(parse_ike(ike_name, sec))
    return out
