"""Typed XFRM states and policies, and their translation to and from messages.

The agent reasons on these frozen dataclasses; only this module knows the
flattened field names of ``messages``. Keys live in :class:`Secret`, whose
repr and str never show the bytes.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from . import constants as c
from . import messages as m
from . import pack


class Secret:
    """Key bytes that refuse to be printed, logged or compared by value in repr."""

    __slots__ = ("_b",)

    def __init__(self, data: bytes) -> None:
        self._b = bytes(data)

    def reveal(self) -> bytes:
        return self._b

    def __len__(self) -> int:
        return len(self._b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._b == self._b

    def __hash__(self) -> int:
        return hash(("secret", len(self._b)))

    def __repr__(self) -> str:
        return f"<secret {len(self._b)} bytes>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle keys by accident
        raise TypeError("key material cannot be serialised")


def pack_addr(addr: str | None, family: int) -> bytes:
    if not addr:
        return b"\0" * 16
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def unpack_addr(raw: bytes, family: int) -> str:
    if family == socket.AF_INET6:
        raw = bytes(raw[:16])
        if raw[:10] == bytes(10):  # ::ffff:a.b.c.d and the like: written as ipaddress writes them
            return shared(str(ipaddress.IPv6Address(raw)))
        return shared(socket.inet_ntop(socket.AF_INET6, raw))
    if family == socket.AF_INET:
        return shared(socket.inet_ntop(socket.AF_INET, bytes(raw[:4])))
    return ""


# Decoded values that recur across a hub's objects (addresses, selectors, templates, the
# device) are kept once: a dump of 10,000 CHILD_SAs decodes each of them thousands of
# times, and a frozen value object is as good shared. Bounded: past SHARED_MAX (a hub of
# 10,000 spokes has ~50,000 such values) the memo starts again: sharing lost, nothing
# wrong. Never for objects that hold keys, nor for values unique per object (counters).
SHARED_MAX = 1 << 16
T = TypeVar("T")
_shared: dict[Any, Any] = {}


def shared(x: T) -> T:
    """The one kept object equal to ``x`` (``x`` itself the first time)."""
    got: T | None = _shared.get(x)
    if got is None:
        if len(_shared) >= SHARED_MAX:
            _shared.clear()
        _shared[x] = got = x
    return got


def _usual(x: T) -> T:
    """The module's one default instance when ``x`` equals it (infinite lifetimes, zero
    stats: most of a hub's), else ``x``; unlike ``shared``, no memo of the unusual ones."""
    usual: T | None = _USUAL.get(type(x))
    return usual if usual is not None and x == usual else x


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


@dataclass(frozen=True, slots=True)
class Selector:
    family: int
    daddr: str
    saddr: str
    prefixlen_d: int
    prefixlen_s: int
    proto: int = 0
    dport: int = 0
    dport_mask: int = 0
    sport: int = 0
    sport_mask: int = 0
    ifindex: int = 0
    user: int = 0

    @property
    def src_net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.saddr}/{self.prefixlen_s}", strict=False)

    @property
    def dst_net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.daddr}/{self.prefixlen_d}", strict=False)

    def overlaps(self, other: Selector) -> bool:
        """True if some packet could match both selectors."""
        if self.family != other.family:
            return False
        if self.proto and other.proto and self.proto != other.proto:
            return False
        for a, am, b, bm in (
            (self.sport, self.sport_mask, other.sport, other.sport_mask),
            (self.dport, self.dport_mask, other.dport, other.dport_mask),
        ):
            mask = am & bm
            if (a & mask) != (b & mask):
                return False
        return self.src_net.overlaps(other.src_net) and self.dst_net.overlaps(other.dst_net)

    def describe(self) -> str:
        s = f"{self.saddr}/{self.prefixlen_s} -> {self.daddr}/{self.prefixlen_d}"
        if self.proto:
            s += f" proto {self.proto}"
        if self.sport_mask:
            s += f" sport {self.sport}"
        if self.dport_mask:
            s += f" dport {self.dport}"
        return s


@dataclass(frozen=True, slots=True)
class LifetimeCfg:
    soft_byte_limit: int = c.XFRM_INF
    hard_byte_limit: int = c.XFRM_INF
    soft_packet_limit: int = c.XFRM_INF
    hard_packet_limit: int = c.XFRM_INF
    soft_add_expires_seconds: int = 0
    hard_add_expires_seconds: int = 0
    soft_use_expires_seconds: int = 0
    hard_use_expires_seconds: int = 0


@dataclass(frozen=True, slots=True)
class LifetimeCur:
    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    replay_window: int = 0
    replay: int = 0
    integrity_failed: int = 0


@dataclass(frozen=True, slots=True)
class Algo:
    """XFRMA_ALG_CRYPT/AUTH/AUTH_TRUNC/AEAD/COMP; ``icv_len`` for AEAD, ``trunc_len`` for auth."""

    name: str
    key: Secret = field(repr=False)
    key_bits: int = 0
    icv_len: int | None = None
    trunc_len: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayState:
    oseq: int = 0
    seq: int = 0
    bitmap: int = 0


@dataclass(frozen=True, slots=True)
class ReplayEsn:
    bmp_len: int
    oseq: int
    seq: int
    oseq_hi: int
    seq_hi: int
    replay_window: int
    bmp: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Mark:
    value: int
    mask: int


@dataclass(frozen=True, slots=True)
class Encap:
    type: int
    sport: int
    dport: int
    oa: str = ""


@dataclass(frozen=True, slots=True)
class Offload:
    ifindex: int
    flags: int

    @property
    def packet(self) -> bool:
        return bool(self.flags & c.XFRM_OFFLOAD_PACKET)

    @property
    def inbound(self) -> bool:
        return bool(self.flags & c.XFRM_OFFLOAD_INBOUND)

    @property
    def mode(self) -> str:
        return "packet" if self.packet else "crypto"


@dataclass(frozen=True, slots=True)
class StateId:
    """What the kernel identifies a state by (and what charon deletes it by)."""

    daddr: str
    spi: int
    proto: int
    family: int
    mark: Mark | None = None


@dataclass(frozen=True, slots=True)
class XfrmState:
    sel: Selector
    daddr: str
    spi: int
    proto: int
    saddr: str
    family: int
    mode: int
    reqid: int
    replay_window: int = 0
    flags: int = 0
    lft: LifetimeCfg = LifetimeCfg()
    curlft: LifetimeCur = LifetimeCur()
    stats: Stats = Stats()
    seq: int = 0
    aead: Algo | None = None
    crypt: Algo | None = None
    auth: Algo | None = None
    comp: Algo | None = None
    encap: Encap | None = None
    replay: ReplayState | None = None
    replay_esn: ReplayEsn | None = None
    mark: Mark | None = None
    if_id: int | None = None
    offload: Offload | None = None
    sa_dir: int | None = None
    extra_flags: int | None = None
    tfcpad: int | None = None
    set_mark: int | None = None
    set_mark_mask: int | None = None
    coaddr: str | None = None
    lastused: int | None = None
    replay_thresh: int | None = None
    etimer_thresh: int | None = None
    sec_ctx: bytes | None = None

    @property
    def id(self) -> StateId:
        return StateId(self.daddr, self.spi, self.proto, self.family, self.mark)

    def evolve(self, **changes: Any) -> XfrmState:
        return replace(self, **changes)

    def describe(self) -> str:
        """One line for logs and errors; never any key."""
        off = f" offload {self.offload.mode} dev#{self.offload.ifindex}" if self.offload else ""
        return f"state spi 0x{self.spi:08x} {self.saddr} -> {self.daddr} reqid {self.reqid}{off}"


@dataclass(frozen=True, slots=True)
class Template:
    daddr: str
    spi: int
    proto: int
    family: int
    saddr: str
    reqid: int
    mode: int
    share: int = 0
    optional: int = 0
    aalgos: int = 0xFFFFFFFF
    ealgos: int = 0xFFFFFFFF
    calgos: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PolicyId:
    sel: Selector
    dir: int
    mark: Mark | None = None
    if_id: int | None = None


@dataclass(frozen=True, slots=True)
class XfrmPolicy:
    sel: Selector
    dir: int
    priority: int
    action: int = c.XFRM_POLICY_ALLOW
    index: int = 0
    flags: int = 0
    share: int = 0
    lft: LifetimeCfg = LifetimeCfg()
    curlft: LifetimeCur = LifetimeCur()
    templates: tuple[Template, ...] = ()
    mark: Mark | None = None
    if_id: int | None = None
    offload: Offload | None = None
    ptype: int = c.XFRM_POLICY_TYPE_MAIN

    @property
    def id(self) -> PolicyId:
        return PolicyId(self.sel, self.dir, self.mark, self.if_id)

    def evolve(self, **changes: Any) -> XfrmPolicy:
        return replace(self, **changes)

    def describe(self) -> str:
        d = c.DIR_NAMES.get(self.dir, str(self.dir))
        off = f" offload {self.offload.mode} dev#{self.offload.ifindex}" if self.offload else ""
        # a policy without templates (an IKE bypass, charon's socket policies) names its action
        what = "reqid " + ",".join(str(t.reqid) for t in self.templates) if self.templates else ("block" if self.action else "allow")
        return f"policy {self.sel.describe()} dir {d} priority {self.priority} {what}{off}"


# ---------------------------------------------------------------- encoding


def _put_prefixed(msg: dict[str, Any], prefix: str, obj: Any, names: tuple[str, ...]) -> None:
    for n in names:
        msg[prefix + n] = getattr(obj, n)


def _selector_into(msg: dict[str, Any], sel: Selector, p: str = "sel_") -> None:
    msg[p + "daddr"] = pack_addr(sel.daddr, sel.family)
    msg[p + "saddr"] = pack_addr(sel.saddr, sel.family)
    _put_prefixed(
        msg, p, sel, ("dport", "dport_mask", "sport", "sport_mask", "family", "prefixlen_d", "prefixlen_s", "proto", "ifindex", "user")
    )


def _selector_from(msg: Any, p: str = "sel_") -> Selector:
    fam = msg[p + "family"]
    return shared(Selector(
        family=fam,
        daddr=unpack_addr(msg[p + "daddr"], fam) or "0.0.0.0",
        saddr=unpack_addr(msg[p + "saddr"], fam) or "0.0.0.0",
        prefixlen_d=msg[p + "prefixlen_d"],
        prefixlen_s=msg[p + "prefixlen_s"],
        proto=msg[p + "proto"],
        dport=msg[p + "dport"],
        dport_mask=msg[p + "dport_mask"],
        sport=msg[p + "sport"],
        sport_mask=msg[p + "sport_mask"],
        ifindex=msg[p + "ifindex"],
        user=msg[p + "user"],
    ))


def _algo_attr(a: Algo) -> dict[str, Any]:
    d: dict[str, Any] = {"alg_name": a.name.encode(), "alg_key_len": a.key_bits, "alg_key": a.key.reveal()}
    if a.icv_len is not None:
        d["alg_icv_len"] = a.icv_len
    if a.trunc_len is not None:
        d["alg_trunc_len"] = a.trunc_len
    return d


def _algo_from(v: Any, kind: str) -> Algo:
    bits = v["alg_key_len"]
    key = bytes(v["alg_key"])[: (bits + 7) // 8]
    return Algo(
        name=shared(bytes(v["alg_name"]).split(b"\0", 1)[0].decode()),
        key=Secret(key),
        key_bits=bits,
        icv_len=v["alg_icv_len"] if kind == "aead" else None,
        trunc_len=v["alg_trunc_len"] if kind == "auth" else None,
    )


def _common_attrs(obj: XfrmState | XfrmPolicy) -> list[Any]:
    attrs: list[Any] = []
    if obj.mark is not None:
        attrs.append(("XFRMA_MARK", {"v": obj.mark.value, "m": obj.mark.mask}))
    if obj.if_id is not None:
        attrs.append(("XFRMA_IF_ID", obj.if_id))
    if obj.offload is not None:
        attrs.append(("XFRMA_OFFLOAD_DEV", {"ifindex": obj.offload.ifindex, "flags": obj.offload.flags}))
    return attrs


_USUAL: dict[type, Any] = {LifetimeCfg: LifetimeCfg(), Stats: Stats()}


def state_to_msg(st: XfrmState, plain: bool = False) -> Any:
    msg = pack.Plain(m.xfrm_usersa_info_msg) if plain else m.xfrm_usersa_info_msg()
    _selector_into(msg, st.sel)
    msg["id_daddr"] = pack_addr(st.daddr, st.family)
    msg["id_spi"] = st.spi
    msg["id_proto"] = st.proto
    msg["saddr"] = pack_addr(st.saddr, st.family)
    _put_prefixed(msg, "lft_", st.lft, m.LIFETIME_CFG_NAMES)
    _put_prefixed(msg, "cur_", st.curlft, m.LIFETIME_CUR_NAMES)
    _put_prefixed(msg, "stats_", st.stats, m.STATS_NAMES)
    for n in ("seq", "reqid", "family", "mode", "replay_window", "flags"):
        msg[n] = getattr(st, n)
    attrs: list[Any] = []
    for name, algo in (("XFRMA_ALG_AEAD", st.aead), ("XFRMA_ALG_CRYPT", st.crypt), ("XFRMA_ALG_COMP", st.comp)):
        if algo is not None:
            attrs.append((name, _algo_attr(algo)))
    if st.auth is not None:
        attrs.append(("XFRMA_ALG_AUTH_TRUNC", _algo_attr(st.auth)))
    if st.encap is not None:
        e = st.encap
        attrs.append(
            ("XFRMA_ENCAP", {"encap_type": e.type, "encap_sport": e.sport, "encap_dport": e.dport, "encap_oa": pack_addr(e.oa, st.family)})
        )
    if st.replay_esn is not None:
        r = st.replay_esn
        v = {n: getattr(r, n) for n in ("bmp_len", "oseq", "seq", "oseq_hi", "seq_hi", "replay_window")}
        v["bmp"] = struct.pack(f"{r.bmp_len}I", *(list(r.bmp) + [0] * r.bmp_len)[: r.bmp_len])
        attrs.append(("XFRMA_REPLAY_ESN_VAL", v))
    elif st.replay is not None:
        attrs.append(("XFRMA_REPLAY_VAL", {"oseq": st.replay.oseq, "seq": st.replay.seq, "bitmap": st.replay.bitmap}))
    for name, val in (
        ("XFRMA_SA_EXTRA_FLAGS", st.extra_flags),
        ("XFRMA_TFCPAD", st.tfcpad),
        ("XFRMA_SET_MARK", st.set_mark),
        ("XFRMA_SET_MARK_MASK", st.set_mark_mask),
        ("XFRMA_REPLAY_THRESH", st.replay_thresh),
        ("XFRMA_ETIMER_THRESH", st.etimer_thresh),
    ):
        if val is not None:
            attrs.append((name, val))
    if st.curlft.add_time:
        # carried counters and add_time: lifetimes keep counting from charon's install
        attrs.append(("XFRMA_LTIME_VAL", {n: getattr(st.curlft, n) for n in m.LIFETIME_CUR_NAMES}))
    if st.coaddr:
        attrs.append(("XFRMA_COADDR", {"addr": pack_addr(st.coaddr, st.family)}))
    attrs += _common_attrs(st)
    if st.sa_dir is not None:
        attrs.append(("XFRMA_SA_DIR", st.sa_dir))
    msg["attrs"] = attrs
    return msg


def state_from_msg(msg: Any) -> XfrmState:
    """Decode a NEWSA/UPDSA/dump message, or the XFRMA_SA of a DELSA/EXPIRE."""
    info = msg.get_attr("XFRMA_SA") if "id_spi" not in msg else msg
    fam = info["family"]
    a = msg.get_attr
    esn = a("XFRMA_REPLAY_ESN_VAL")
    rep = a("XFRMA_REPLAY_VAL")
    encap = a("XFRMA_ENCAP")
    mark = a("XFRMA_MARK")
    off = a("XFRMA_OFFLOAD_DEV")
    coaddr = a("XFRMA_COADDR")
    auth = a("XFRMA_ALG_AUTH_TRUNC")
    return XfrmState(
        sel=_selector_from(info),
        daddr=unpack_addr(info["id_daddr"], fam),
        spi=info["id_spi"],
        proto=info["id_proto"],
        saddr=unpack_addr(info["saddr"], fam),
        family=fam,
        mode=info["mode"],
        reqid=info["reqid"],
        replay_window=info["replay_window"],
        flags=info["flags"],
        lft=_usual(LifetimeCfg(**{n: info["lft_" + n] for n in m.LIFETIME_CFG_NAMES})),
        curlft=LifetimeCur(**{n: info["cur_" + n] for n in m.LIFETIME_CUR_NAMES}),
        stats=_usual(Stats(**{n: info["stats_" + n] for n in m.STATS_NAMES})),
        seq=info["seq"],
        aead=_algo_from(a("XFRMA_ALG_AEAD"), "aead") if a("XFRMA_ALG_AEAD") else None,
        crypt=_algo_from(a("XFRMA_ALG_CRYPT"), "crypt") if a("XFRMA_ALG_CRYPT") else None,
        auth=_algo_from(auth, "auth") if auth else (_algo_from(a("XFRMA_ALG_AUTH"), "crypt") if a("XFRMA_ALG_AUTH") else None),
        comp=_algo_from(a("XFRMA_ALG_COMP"), "crypt") if a("XFRMA_ALG_COMP") else None,
        encap=Encap(encap["encap_type"], encap["encap_sport"], encap["encap_dport"], unpack_addr(encap["encap_oa"], fam)) if encap else None,
        replay=ReplayState(rep["oseq"], rep["seq"], rep["bitmap"]) if rep else None,
        replay_esn=(
            ReplayEsn(
                esn["bmp_len"], esn["oseq"], esn["seq"], esn["oseq_hi"], esn["seq_hi"], esn["replay_window"],
                struct.unpack(f"{esn['bmp_len']}I", bytes(esn["bmp"])[: 4 * esn["bmp_len"]]),
            )
            if esn
            else None
        ),
        mark=shared(Mark(mark["v"], mark["m"])) if mark else None,
        if_id=a("XFRMA_IF_ID"),
        offload=shared(Offload(off["ifindex"], off["flags"])) if off else None,
        sa_dir=a("XFRMA_SA_DIR"),
        extra_flags=a("XFRMA_SA_EXTRA_FLAGS"),
        tfcpad=a("XFRMA_TFCPAD"),
        set_mark=a("XFRMA_SET_MARK"),
        set_mark_mask=a("XFRMA_SET_MARK_MASK"),
        coaddr=unpack_addr(coaddr["addr"], fam) if coaddr else None,
        lastused=a("XFRMA_LASTUSED"),
        replay_thresh=a("XFRMA_REPLAY_THRESH"),
        etimer_thresh=a("XFRMA_ETIMER_THRESH"),
        sec_ctx=bytes.fromhex(a("XFRMA_SEC_CTX").replace(":", "")) if a("XFRMA_SEC_CTX") else None,
    )


def state_id_to_msg(sid: StateId, plain: bool = False) -> Any:
    msg = pack.Plain(m.xfrm_usersa_id_msg) if plain else m.xfrm_usersa_id_msg()
    msg["daddr"] = pack_addr(sid.daddr, sid.family)
    msg["spi"] = sid.spi
    msg["family"] = sid.family
    msg["proto"] = sid.proto
    msg["attrs"] = [("XFRMA_MARK", {"v": sid.mark.value, "m": sid.mark.mask})] if sid.mark else []
    return msg


def state_id_from_msg(msg: Any) -> StateId:
    fam = msg["family"]
    mark = msg.get_attr("XFRMA_MARK")
    return StateId(unpack_addr(msg["daddr"], fam), msg["spi"], msg["proto"], fam, Mark(mark["v"], mark["m"]) if mark else None)


_TMPL_SIZE = m.fields_size(m.USER_TMPL_FIELDS)
_TMPL_FMT = "=16sIB3xH2x16sIBBBxIII"  # spi packed with htonl


def _tmpl_pack(t: Template) -> bytes:
    raw = struct.pack(
        _TMPL_FMT,
        pack_addr(t.daddr, t.family),
        socket.htonl(t.spi),
        t.proto,
        t.family,
        pack_addr(t.saddr, t.family),
        t.reqid,
        t.mode,
        t.share,
        t.optional,
        t.aalgos,
        t.ealgos,
        t.calgos,
    )
    assert len(raw) == _TMPL_SIZE
    return raw


def _tmpl_unpack(raw: bytes) -> Template:
    daddr, spi, proto, fam, saddr, reqid, mode, share, opt, aa, ea, ca = struct.unpack(_TMPL_FMT, raw)
    return shared(Template(unpack_addr(daddr, fam), socket.ntohl(spi), proto, fam, unpack_addr(saddr, fam), reqid, mode, share, opt, aa, ea, ca))


def policy_to_msg(p: XfrmPolicy, plain: bool = False) -> Any:
    msg = pack.Plain(m.xfrm_userpolicy_info_msg) if plain else m.xfrm_userpolicy_info_msg()
    _selector_into(msg, p.sel)
    _put_prefixed(msg, "lft_", p.lft, m.LIFETIME_CFG_NAMES)
    _put_prefixed(msg, "cur_", p.curlft, m.LIFETIME_CUR_NAMES)
    for n in ("priority", "index", "dir", "action", "flags", "share"):
        msg[n] = getattr(p, n)
    attrs: list[Any] = []
    if p.templates:
        attrs.append(("XFRMA_TMPL", {"raw": b"".join(_tmpl_pack(t) for t in p.templates)}))
    if p.ptype != c.XFRM_POLICY_TYPE_MAIN:
        attrs.append(("XFRMA_POLICY_TYPE", {"type": p.ptype}))
    msg["attrs"] = attrs + _common_attrs(p)
    return msg


def policy_from_msg(msg: Any) -> XfrmPolicy:
    """Decode a NEWPOLICY/dump message, or the XFRMA_POLICY of a DELPOLICY/POLEXPIRE."""
    info = msg if "priority" in msg else msg.get_attr("XFRMA_POLICY")
    a = msg.get_attr
    raw = bytes((a("XFRMA_TMPL") or {}).get("raw", b"")) if a("XFRMA_TMPL") else b""
    tmpls = tuple(_tmpl_unpack(raw[i : i + _TMPL_SIZE]) for i in range(0, len(raw) - _TMPL_SIZE + 1, _TMPL_SIZE))
    mark = a("XFRMA_MARK")
    off = a("XFRMA_OFFLOAD_DEV")
    ptype = a("XFRMA_POLICY_TYPE")
    return XfrmPolicy(
        sel=_selector_from(info),
        dir=info["dir"],
        priority=info["priority"],
        action=info["action"],
        index=info["index"],
        flags=info["flags"],
        share=info["share"],
        lft=_usual(LifetimeCfg(**{n: info["lft_" + n] for n in m.LIFETIME_CFG_NAMES})),
        curlft=LifetimeCur(**{n: info["cur_" + n] for n in m.LIFETIME_CUR_NAMES}),
        templates=tmpls,
        mark=shared(Mark(mark["v"], mark["m"])) if mark else None,
        if_id=a("XFRMA_IF_ID"),
        offload=shared(Offload(off["ifindex"], off["flags"])) if off else None,
        ptype=ptype["type"] if ptype else c.XFRM_POLICY_TYPE_MAIN,
    )


def policy_id_to_msg(pid: PolicyId, plain: bool = False) -> Any:
    msg = pack.Plain(m.xfrm_userpolicy_id_msg) if plain else m.xfrm_userpolicy_id_msg()
    _selector_into(msg, pid.sel)
    msg["index"] = 0
    msg["dir"] = pid.dir
    attrs: list[Any] = []
    if pid.mark is not None:
        attrs.append(("XFRMA_MARK", {"v": pid.mark.value, "m": pid.mark.mask}))
    if pid.if_id is not None:
        attrs.append(("XFRMA_IF_ID", pid.if_id))
    msg["attrs"] = attrs
    return msg


def policy_id_from_msg(msg: Any) -> PolicyId:
    mark = msg.get_attr("XFRMA_MARK")
    return PolicyId(_selector_from(msg), msg["dir"], Mark(mark["v"], mark["m"]) if mark else None, msg.get_attr("XFRMA_IF_ID"))
