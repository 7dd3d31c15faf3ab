"""Kernel backend: the narrow interface the reconciler uses, like charon's kernel_ipsec.

``NetlinkBackend`` talks XFRM netlink to the running kernel; ``MemoryBackend``
imitates the kernel's rules (identity, EEXIST, offload refusals) for fast unit
tests. Both take one list of operations and return one result per operation,
so a batch is a batch on both.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import drvinfo
from .links import read_devices
from .mirror import is_larval, tx_rule
from .planner import Device
from .xfrm import constants as c
from .xfrm import messages as m
from .xfrm import objects as o
from .xfrm.counters import SaCounters, counters_of, parse_dump
from .xfrm.netlink import Request, XfrmError, XfrmSocket

log = logging.getLogger("swan_offload.backend")


@dataclass(frozen=True, slots=True)
class AddState:
    state: o.XfrmState


@dataclass(frozen=True, slots=True)
class DelState:
    id: o.StateId
    what: str = ""


@dataclass(frozen=True, slots=True)
class AddPolicy:
    policy: o.XfrmPolicy
    update: bool = False  # XFRM_MSG_UPDPOLICY: replace the policy of the same identity in one step


@dataclass(frozen=True, slots=True)
class DelPolicy:
    id: o.PolicyId
    what: str = ""


Op = AddState | DelState | AddPolicy | DelPolicy


def describe(op: Op) -> str:
    if isinstance(op, AddState):
        return "add " + op.state.describe()
    if isinstance(op, AddPolicy):
        return ("update " if op.update else "add ") + op.policy.describe()
    if isinstance(op, DelState):
        return op.what or f"delete state spi 0x{op.id.spi:08x} dst {op.id.daddr}"
    return op.what or f"delete policy {op.id.sel.describe()} dir {c.DIR_NAMES.get(op.id.dir)}"


class Backend(Protocol):
    def dump_states(self) -> list[o.XfrmState]: ...
    def dump_counters(self) -> list[SaCounters]: ...
    def dump_policies(self) -> list[o.XfrmPolicy]: ...
    def get_state(self, sid: o.StateId) -> o.XfrmState | None: ...
    def get_states(self, sids: Sequence[o.StateId]) -> list[o.XfrmState | None]: ...
    def apply(self, ops: Sequence[Op]) -> list[XfrmError | None]: ...
    def devices(self) -> tuple[dict[str, Device], dict[str, Device]]: ...


class NetlinkBackend:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.sock = XfrmSocket(netns=netns)
        self._ethtool: socket.socket | None = None  # made at the first devices()

    def close(self) -> None:
        self.sock.close()
        if self._ethtool is not None:
            self._ethtool.close()

    def dump_states(self) -> list[o.XfrmState]:
        return self.sock.dump(c.XFRM_MSG_GETSA, m.xfrm_dump_request_msg(), "dump states", convert=o.state_from_msg)

    def dump_counters(self) -> list[SaCounters]:
        """Every state's identity, counters, replay state and offload; no keys (xfrm/counters.py)."""
        return list(parse_dump(self.sock.dump(c.XFRM_MSG_GETSA, m.xfrm_dump_request_msg(), "dump states", raw=True)))

    def dump_policies(self) -> list[o.XfrmPolicy]:
        return self.sock.dump(c.XFRM_MSG_GETPOLICY, m.xfrm_dump_request_msg(), "dump policies", convert=o.policy_from_msg)

    def get_state(self, sid: o.StateId) -> o.XfrmState | None:
        return self.get_states([sid])[0]

    def get_states(self, sids: Sequence[o.StateId]) -> list[o.XfrmState | None]:
        """GETSA of each, in socket-sized batches; None for a state the kernel does not hold."""
        reqs = [Request(c.XFRM_MSG_GETSA, o.state_id_to_msg(sid, plain=True), what=f"get state spi 0x{sid.spi:08x}", convert=o.state_from_msg)
                for sid in sids]
        out: list[o.XfrmState | None] = []
        for reply in self.sock.batch(reqs):
            if reply.error is not None:
                if reply.error.errno == errno.ESRCH:
                    out.append(None)
                    continue
                raise reply.error
            out.append(reply.messages[0] if reply.messages else None)
        return out

    def apply(self, ops: Sequence[Op]) -> list[XfrmError | None]:
        return replace_placeholders(self._send, self.get_states, ops, self._send(ops))

    def _send(self, ops: Sequence[Op]) -> list[XfrmError | None]:
        reqs = []
        for i, op in enumerate(ops):
            if isinstance(op, AddState):
                # the NEWSA of a move leaves in the DELSA's datagram: the kernel handles both under one
                # hold of its XFRM config mutex, so no other change (charon's) comes in between
                prev = ops[i - 1] if i else None
                joined = isinstance(prev, DelState) and prev.id == op.state.id
                reqs.append(Request(c.XFRM_MSG_NEWSA, o.state_to_msg(op.state, plain=True), what=describe(op), joined=joined, sent=op.state))
            elif isinstance(op, DelState):
                reqs.append(Request(c.XFRM_MSG_DELSA, o.state_id_to_msg(op.id, plain=True), what=describe(op), sent=op.id))
            elif isinstance(op, AddPolicy):
                kind = c.XFRM_MSG_UPDPOLICY if op.update else c.XFRM_MSG_NEWPOLICY
                reqs.append(Request(kind, o.policy_to_msg(op.policy, plain=True), what=describe(op), sent=op.policy))
            else:
                reqs.append(Request(c.XFRM_MSG_DELPOLICY, o.policy_id_to_msg(op.id, plain=True), what=describe(op), sent=op.id))
        return [r.error for r in self.sock.batch(reqs)]

    def devices(self) -> tuple[dict[str, Device], dict[str, Device]]:
        """(local address -> device, interface name -> device), read with rtnetlink."""
        links, addresses = read_devices(self.netns)
        kernel = drvinfo.release()
        if self._ethtool is None:
            self._ethtool = drvinfo.ioctl_socket(self.netns)
        by_name = {name: Device(index, name, up, drvinfo.exact_address_steering(*drvinfo.driver_info(self._ethtool, name), kernel))
                   for index, name, up in links}
        by_index = {d.ifindex: d for d in by_name.values()}
        by_addr = {addr: by_index[index] for index, addr in addresses if index in by_index}
        return by_addr, by_name


class _StateTable(dict[tuple[Any, ...], o.XfrmState]):
    """The in-memory kernel's states, with the state holding each device TX rule (``tx``)
    kept on every write, so a NEWSA checks the one-OUT-SA-per-reqid rule in O(1): a scan made
    a hub's promotion O(N^2) in bench/event.py. Tests write the table directly, so the index
    lives in the mutators."""

    def __init__(self) -> None:
        super().__init__()
        self.tx: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _drop_rule(self, k: tuple[Any, ...]) -> None:
        old = super().get(k)
        if old is not None and (r := tx_rule(old)) is not None and self.tx.get(r) == k:
            del self.tx[r]

    def __setitem__(self, k: tuple[Any, ...], st: o.XfrmState) -> None:
        self._drop_rule(k)
        super().__setitem__(k, st)
        if (r := tx_rule(st)) is not None:
            self.tx[r] = k

    def __delitem__(self, k: tuple[Any, ...]) -> None:
        self._drop_rule(k)
        super().__delitem__(k)

    def pop(self, k: tuple[Any, ...], *default: Any) -> Any:
        self._drop_rule(k)
        return super().pop(k, *default)

    def update(self, other: Any = (), **kw: Any) -> None:
        for k, st in dict(other, **kw).items():
            self[k] = st

    def clear(self) -> None:
        super().clear()
        self.tx.clear()


class MemoryBackend:
    """An in-memory kernel with XFRM's identity rules, for fast planner/reconciler tests.

    ``refuse`` maps an ifindex to the text a driver would answer packet offload with.
    """

    def __init__(self, refuse: dict[int, str] | None = None) -> None:
        self.states = _StateTable()
        self.policies: dict[tuple[Any, ...], o.XfrmPolicy] = {}
        self.refuse = dict(refuse or {})
        self.addresses: dict[str, Device] = {}
        self.names: dict[str, Device] = {}
        self.batches: list[list[Op]] = []
        self._index = 8

    @staticmethod
    def _skey(sid: o.StateId) -> tuple[Any, ...]:
        return (sid.daddr, sid.spi, sid.proto)

    @staticmethod
    def _pkey(pid: o.PolicyId) -> tuple[Any, ...]:
        return (pid.sel, pid.dir, pid.mark, pid.if_id)

    def dump_states(self) -> list[o.XfrmState]:
        return list(self.states.values())

    def dump_counters(self) -> list[SaCounters]:
        return [counters_of(s) for s in self.states.values()]

    def dump_policies(self) -> list[o.XfrmPolicy]:
        return list(self.policies.values())

    def get_state(self, sid: o.StateId) -> o.XfrmState | None:
        return self.states.get(self._skey(sid))

    def get_states(self, sids: Sequence[o.StateId]) -> list[o.XfrmState | None]:
        return [self.get_state(sid) for sid in sids]

    def _one(self, op: Op) -> XfrmError | None:
        what = describe(op)
        if isinstance(op, AddState):
            k = self._skey(op.state.id)
            if k in self.states:
                return XfrmError(errno.EEXIST, None, what)
            off = op.state.offload
            if off and off.packet and off.ifindex in self.refuse:
                return XfrmError(errno.EINVAL, self.refuse[off.ifindex], what)
            rule = tx_rule(op.state)
            if rule is not None and rule in self.states.tx:
                return XfrmError(errno.EEXIST, "Device failed to offload this state", what)  # a ConnectX's one TX rule per reqid
            self.states[k] = op.state
        elif isinstance(op, DelState):
            if self.states.pop(self._skey(op.id), None) is None:
                return XfrmError(errno.ESRCH, None, what)
        elif isinstance(op, AddPolicy):
            k = self._pkey(op.policy.id)
            if k in self.policies and not op.update:
                return XfrmError(errno.EEXIST, None, what)
            off = op.policy.offload
            if off and off.ifindex in self.refuse:
                return XfrmError(errno.EINVAL, self.refuse[off.ifindex], what)
            self._index += 8
            self.policies[k] = replace(op.policy, index=self._index)
        else:
            if self.policies.pop(self._pkey(op.id), None) is None:
                return XfrmError(errno.ENOENT, None, what)
        return None

    def apply(self, ops: Sequence[Op]) -> list[XfrmError | None]:
        return replace_placeholders(self._send, self.get_states, ops, self._send(ops))

    def _send(self, ops: Sequence[Op]) -> list[XfrmError | None]:
        self.batches.append(list(ops))
        return [self._one(op) for op in ops]

    def devices(self) -> tuple[dict[str, Device], dict[str, Device]]:
        return dict(self.addresses), dict(self.names)


PLACEHOLDER_TRIES = 3


def replace_placeholders(send: Callable[[Sequence[Op]], list[XfrmError | None]],
                         get_states: Callable[[Sequence[o.StateId]], list[o.XfrmState | None]],
                         ops: Sequence[Op], errs: list[XfrmError | None]) -> list[XfrmError | None]:
    """Send again each AddState that got EEXIST because an acquire's placeholder holds its SPI,
    after a DELSA of the placeholder in the same datagram.

    charon 5.9 names the outbound SPI in its OUT templates. A packet that meets charon's policy
    while no software SA of that SPI exists (a move's swap, a device's flush of its offloaded
    SAs and policies) makes ``xfrm_state_find`` insert a larval state with that SPI, and every
    NEWSA of the SPI then answers EEXIST until ``xfrm_acq_expires`` (30 s): the move, its undo
    and a device-loss restore all failed, and charon's SA was gone (CI, sim_interop.sh). A
    placeholder holds no key and no traffic; only one the kernel shows as larval is removed.
    """
    out = list(errs)
    for _ in range(PLACEHOLDER_TRIES):
        blocked = [(i, op) for i, (op, e) in enumerate(zip(ops, out)) if isinstance(op, AddState) and e is not None and e.errno == errno.EEXIST]
        held = get_states([op.state.id for _i, op in blocked]) if blocked else []
        again = [(i, op) for (i, op), st in zip(blocked, held) if st is not None and is_larval(st)]
        if not again:
            break
        retry: list[Op] = []
        for _i, op in again:
            retry += [DelState(op.state.id, f"remove the acquire placeholder holding spi 0x{op.state.spi:08x}"), op]
        res = send(retry)
        for k, (i, _op) in enumerate(again):
            out[i] = res[2 * k + 1]
        spis = ", ".join(f"0x{op.state.spi:08x}" for _i, op in again[:10]) + (" ..." if len(again) > 10 else "")
        log.info("%d SPI(s) held by the kernel's acquire placeholders (a packet met charon's OUT policy while no SA of "
                 "the SPI existed), replaced by their SAs: %s", len(again), spis)
    return out


def random_spi() -> int:
    """An SPI for a short-lived probe state, in the range charon never allocates (< 0xc0000000 is its floor)."""
    return 0x100 + int.from_bytes(os.urandom(3), "big")

