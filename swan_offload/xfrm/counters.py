"""A lean read of a state dump: identity, counters, replay state and offload, never the keys.

The held-copy refresh (every second) and each metrics scrape read every state the kernel
holds. Decoding whole messages costs ~160 us per state on the build host, many times that
under the lab's emulation: at hub scale most of the agent's idle CPU. These readers need a
few fixed fields and three small attributes, unpacked here straight from the bytes at the
offsets the C compiler gives (tests compare every field with the full decoder). The key
attributes are skipped, so these reads never hold key material.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .objects import LifetimeCur, Offload, ReplayEsn, ReplayState, Stats, XfrmState

_NLMSG = 16  # struct nlmsghdr
_INFO = 224  # struct xfrm_usersa_info (x86_64, with its 7 tail pad bytes)
_ID = struct.Struct("=16sIB")  # xfrm_id at 56: daddr, spi (big-endian, unpacked below), proto
_CUR = struct.Struct("=4Q")  # xfrm_lifetime_cur at 160
_TAIL = struct.Struct("=3IIIHBBB")  # stats (12) at 192, seq, reqid, family, mode, replay_window, flags
_NLA = struct.Struct("=HH")
XFRMA_REPLAY_VAL, XFRMA_REPLAY_ESN_VAL, XFRMA_OFFLOAD_DEV = 10, 23, 28
NEWSA = 16


@dataclass(frozen=True, slots=True)
class SaCounters:
    """One state as the refresh and the metrics need it."""

    daddr: str
    spi: int
    proto: int
    reqid: int
    family: int
    curlft: LifetimeCur
    stats: Stats
    replay: ReplayState | None
    replay_esn: ReplayEsn | None
    offload: Offload | None


def _addr(raw: bytes, family: int) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def sa_counters(msg: bytes) -> SaCounters:
    """One NEWSA message (header included) of a state dump."""
    base = _NLMSG
    daddr, spi_be, proto = _ID.unpack_from(msg, base + 56)
    cur = LifetimeCur(*_CUR.unpack_from(msg, base + 160))
    st_rw, st_replay, st_icv, _seq, reqid, family, _mode, _rw, _flags = _TAIL.unpack_from(msg, base + 192)
    replay = esn = off = None
    pos, end = base + _INFO, struct.unpack_from("=I", msg, 0)[0]
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(msg, pos)
        if alen < 4:
            break
        atype &= 0x3FFF
        if atype == XFRMA_REPLAY_VAL:
            replay = ReplayState(*struct.unpack_from("=3I", msg, pos + 4))
        elif atype == XFRMA_REPLAY_ESN_VAL:
            bmp_len, oseq, seq, oseq_hi, seq_hi, window = struct.unpack_from("=6I", msg, pos + 4)
            esn = ReplayEsn(bmp_len, oseq, seq, oseq_hi, seq_hi, window, struct.unpack_from(f"={bmp_len}I", msg, pos + 28))
        elif atype == XFRMA_OFFLOAD_DEV:
            ifindex, flags = struct.unpack_from("=iB", msg, pos + 4)
            off = Offload(ifindex, flags)
        pos += (alen + 3) & ~3
    return SaCounters(_addr(daddr, family), socket.ntohl(spi_be), proto, reqid, family, cur,
                      Stats(st_rw, st_replay, st_icv), replay, esn, off)


def parse_dump(chunks: list[bytes]) -> Iterator[SaCounters]:
    """Every state of a dump's raw messages (other message types are skipped)."""
    for chunk in chunks:
        if len(chunk) >= _NLMSG + _INFO and struct.unpack_from("=H", chunk, 4)[0] == NEWSA:
            yield sa_counters(chunk)


def counters_of(st: XfrmState) -> SaCounters:
    """The same view of a decoded state (the in-memory kernel's dump)."""
    return SaCounters(st.daddr, st.spi, st.proto, st.reqid, st.family, st.curlft, st.stats, st.replay, st.replay_esn, st.offload)
