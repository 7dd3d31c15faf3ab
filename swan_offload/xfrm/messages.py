"""XFRM netlink message and attribute classes on pyroute2's nlmsg/nla.

pyroute2 packs fields one after another with no C alignment, so every hole of
the kernel's structs is spelled out as an explicit pad field; nested structs are
flattened with a prefix (``sel_``, ``id_``, ``lft_``, ``cur_``, ``stats_``).
``tests/test_xfrm_messages.py`` checks every size against the C compiler's.
"""

from __future__ import annotations

import struct
from typing import Any

from pyroute2.netlink import nla, nlmsg

from . import constants as c


def selector_fields(p: str = "sel_") -> tuple[Any, ...]:
    return (
        (p + "daddr", "16s"),
        (p + "saddr", "16s"),
        (p + "dport", ">H"),
        (p + "dport_mask", ">H"),
        (p + "sport", ">H"),
        (p + "sport_mask", ">H"),
        (p + "family", "H"),
        (p + "prefixlen_d", "B"),
        (p + "prefixlen_s", "B"),
        (p + "proto", "B"),
        ("__pad_" + p, "3x"),
        (p + "ifindex", "i"),
        (p + "user", "I"),
    )


def id_fields(p: str = "id_") -> tuple[Any, ...]:
    return ((p + "daddr", "16s"), (p + "spi", ">I"), (p + "proto", "B"), ("__pad_" + p, "3x"))


LIFETIME_CFG_NAMES = (
    "soft_byte_limit",
    "hard_byte_limit",
    "soft_packet_limit",
    "hard_packet_limit",
    "soft_add_expires_seconds",
    "hard_add_expires_seconds",
    "soft_use_expires_seconds",
    "hard_use_expires_seconds",
)
LIFETIME_CUR_NAMES = ("bytes", "packets", "add_time", "use_time")
STATS_NAMES = ("replay_window", "replay", "integrity_failed")


def lifetime_cfg_fields(p: str = "lft_") -> tuple[Any, ...]:
    return tuple((p + n, "Q") for n in LIFETIME_CFG_NAMES)


def lifetime_cur_fields(p: str = "cur_") -> tuple[Any, ...]:
    return tuple((p + n, "Q") for n in LIFETIME_CUR_NAMES)


USERSA_INFO_FIELDS = (
    selector_fields()
    + id_fields()
    + (("saddr", "16s"),)
    + lifetime_cfg_fields()
    + lifetime_cur_fields()
    + tuple(("stats_" + n, "I") for n in STATS_NAMES)
    + (
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad_tail", "7x"),
    )
)

USERSA_ID_FIELDS = (
    ("daddr", "16s"),
    ("spi", ">I"),
    ("family", "H"),
    ("proto", "B"),
    ("__pad_tail", "x"),
)

USERPOLICY_INFO_FIELDS = (
    selector_fields()
    + lifetime_cfg_fields()
    + lifetime_cur_fields()
    + (
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad_tail", "4x"),
    )
)

USERPOLICY_ID_FIELDS = selector_fields() + (("index", "I"), ("dir", "B"), ("__pad_tail", "3x"))

USER_TMPL_FIELDS = id_fields() + (
    ("family", "H"),
    ("__pad_family", "2x"),
    ("saddr", "16s"),
    ("reqid", "I"),
    ("mode", "B"),
    ("share", "B"),
    ("optional", "B"),
    ("__pad_opt", "x"),
    ("aalgos", "I"),
    ("ealgos", "I"),
    ("calgos", "I"),
)


def fields_size(fields: tuple[Any, ...]) -> int:
    """Byte size of a flat field list, as pyroute2 will pack it."""
    return sum(struct.calcsize(fmt) for _, fmt in fields)


class _tailed(nla):
    """An attribute struct followed by variable-length bytes (keys, bitmaps)."""

    tail = "tail"

    def ft_encode(self, offset: int) -> tuple[int, int]:
        offset, _ = super().ft_encode(offset)
        data = bytes(self.get(self.tail) or b"")
        self.data.extend(data)
        offset += len(data)
        diff = (-offset) % 4
        self.data.extend(b"\0" * diff)
        return offset + diff, diff

    def ft_decode(self, offset: int) -> None:
        super().ft_decode(offset)
        start = offset + fields_size(self.fields)
        self[self.tail] = bytes(self.data[start : self.offset + self.length])


class xfrm_attrs:
    """Mixin carrying the XFRMA_* attribute map shared by SA and policy messages."""

    nla_map = (
        (c.XFRMA_ALG_AUTH, "XFRMA_ALG_AUTH", "xfrm_algo"),
        (c.XFRMA_ALG_CRYPT, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (c.XFRMA_ALG_COMP, "XFRMA_ALG_COMP", "xfrm_algo"),
        (c.XFRMA_ENCAP, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (c.XFRMA_TMPL, "XFRMA_TMPL", "xfrm_user_tmpls"),
        (c.XFRMA_SA, "XFRMA_SA", "xfrm_usersa_info"),
        (c.XFRMA_POLICY, "XFRMA_POLICY", "xfrm_userpolicy_info"),
        (c.XFRMA_SEC_CTX, "XFRMA_SEC_CTX", "hex"),
        (c.XFRMA_LTIME_VAL, "XFRMA_LTIME_VAL", "xfrm_lifetime_cur"),
        (c.XFRMA_REPLAY_VAL, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
        (c.XFRMA_REPLAY_THRESH, "XFRMA_REPLAY_THRESH", "uint32"),
        (c.XFRMA_ETIMER_THRESH, "XFRMA_ETIMER_THRESH", "uint32"),
        (c.XFRMA_SRCADDR, "XFRMA_SRCADDR", "xfrm_address"),
        (c.XFRMA_COADDR, "XFRMA_COADDR", "xfrm_address"),
        (c.XFRMA_LASTUSED, "XFRMA_LASTUSED", "uint64"),
        (c.XFRMA_POLICY_TYPE, "XFRMA_POLICY_TYPE", "xfrm_userpolicy_type"),
        (c.XFRMA_ALG_AEAD, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (c.XFRMA_ALG_AUTH_TRUNC, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (c.XFRMA_MARK, "XFRMA_MARK", "xfrm_mark"),
        (c.XFRMA_TFCPAD, "XFRMA_TFCPAD", "uint32"),
        (c.XFRMA_REPLAY_ESN_VAL, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (c.XFRMA_SA_EXTRA_FLAGS, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (c.XFRMA_PAD, "XFRMA_PAD", "hex"),
        (c.XFRMA_OFFLOAD_DEV, "XFRMA_OFFLOAD_DEV", "xfrm_user_offload"),
        (c.XFRMA_SET_MARK, "XFRMA_SET_MARK", "uint32"),
        (c.XFRMA_SET_MARK_MASK, "XFRMA_SET_MARK_MASK", "uint32"),
        (c.XFRMA_IF_ID, "XFRMA_IF_ID", "uint32"),
        (c.XFRMA_MTIMER_THRESH, "XFRMA_MTIMER_THRESH", "uint32"),
        (c.XFRMA_SA_DIR, "XFRMA_SA_DIR", "uint8"),
    )

    class xfrm_algo(_tailed):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"))
        tail = "alg_key"

    class xfrm_algo_auth(_tailed):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_trunc_len", "I"))
        tail = "alg_key"

    class xfrm_algo_aead(_tailed):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_icv_len", "I"))
        tail = "alg_key"

    class xfrm_replay_state(nla):
        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    class xfrm_replay_state_esn(_tailed):
        fields = (
            ("bmp_len", "I"),
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
        )
        tail = "bmp"

    class xfrm_encap_tmpl(nla):
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__pad", "2x"),
            ("encap_oa", "16s"),
        )

    class xfrm_user_tmpl(nla):
        fields = USER_TMPL_FIELDS

    class xfrm_user_tmpls(_tailed):
        """XFRMA_TMPL is an array of xfrm_user_tmpl structs in one attribute."""

        fields = ()
        tail = "raw"

    class xfrm_usersa_info(nla):
        fields = USERSA_INFO_FIELDS

    class xfrm_userpolicy_info(nla):
        fields = USERPOLICY_INFO_FIELDS

    class xfrm_lifetime_cur(nla):
        fields = lifetime_cur_fields("")

    class xfrm_address(nla):
        fields = (("addr", "16s"),)

    class xfrm_userpolicy_type(nla):
        fields = (("type", "B"), ("__pad1", "x"), ("__pad2", "2x"))

    class xfrm_mark(nla):
        fields = (("v", "I"), ("m", "I"))

    class xfrm_user_offload(nla):
        fields = (("ifindex", "i"), ("flags", "B"), ("__pad", "3x"))


class xfrm_usersa_info_msg(xfrm_attrs, nlmsg):
    fields = USERSA_INFO_FIELDS


class xfrm_usersa_id_msg(xfrm_attrs, nlmsg):
    fields = USERSA_ID_FIELDS


class xfrm_userpolicy_info_msg(xfrm_attrs, nlmsg):
    fields = USERPOLICY_INFO_FIELDS


class xfrm_userpolicy_id_msg(xfrm_attrs, nlmsg):
    fields = USERPOLICY_ID_FIELDS


class xfrm_user_expire_msg(xfrm_attrs, nlmsg):
    fields = USERSA_INFO_FIELDS + (("hard", "B"), ("__pad_hard", "7x"))


class xfrm_user_polexpire_msg(xfrm_attrs, nlmsg):
    fields = USERPOLICY_INFO_FIELDS + (("hard", "B"), ("__pad_hard", "7x"))


class xfrm_user_acquire_msg(xfrm_attrs, nlmsg):
    fields = (
        id_fields()
        + (("saddr", "16s"),)
        + selector_fields()
        + tuple(("pol_" + n, f) for n, f in USERPOLICY_INFO_FIELDS)
        + (("aalgos", "I"), ("ealgos", "I"), ("calgos", "I"), ("seq", "I"))
    )


class xfrm_usersa_flush_msg(nlmsg):
    fields = (("proto", "B"), ("__pad", "3x"))


class xfrm_userpolicy_flush_msg(nlmsg):
    fields = ()


class xfrm_dump_request_msg(nlmsg):
    """A GETSA/GETPOLICY dump request: the kernel reads no body (it parses what follows
    the header as attributes, so a zeroed id struct there is "leftover" garbage)."""

    fields = ()


# what the kernel sends (replies, dumps, multicast) for each message type
MESSAGE_CLASSES: dict[int, type] = {
    c.XFRM_MSG_NEWSA: xfrm_usersa_info_msg,
    c.XFRM_MSG_UPDSA: xfrm_usersa_info_msg,
    c.XFRM_MSG_DELSA: xfrm_usersa_id_msg,
    c.XFRM_MSG_GETSA: xfrm_usersa_id_msg,
    c.XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info_msg,
    c.XFRM_MSG_UPDPOLICY: xfrm_userpolicy_info_msg,
    c.XFRM_MSG_DELPOLICY: xfrm_userpolicy_id_msg,
    c.XFRM_MSG_GETPOLICY: xfrm_userpolicy_id_msg,
    c.XFRM_MSG_EXPIRE: xfrm_user_expire_msg,
    c.XFRM_MSG_POLEXPIRE: xfrm_user_polexpire_msg,
    c.XFRM_MSG_ACQUIRE: xfrm_user_acquire_msg,
    c.XFRM_MSG_FLUSHSA: xfrm_usersa_flush_msg,
    c.XFRM_MSG_FLUSHPOLICY: xfrm_userpolicy_flush_msg,
}
