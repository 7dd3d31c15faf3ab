"""Inside the lab VM: a charon 5.9.8 stand-in for N beyond what charon negotiates under TCG.

    standin.py SOCKET SHAPE N     (run in the gateway's netns: ip netns exec gwa ...)

It installs the kernel objects charon 5.9.8 installs for N CHILD_SAs (tests/factories.py's
charon_objects, with charon's priorities for ports: kernel_netlink_ipsec.c get_priority()),
in software, and serves VICI on SOCKET with the protocol-faithful test server
(tests/support/vici_server.py: list-sas and its filters, stats, 512 KiB message limit), plus
``rekey`` (child-id): new SAs in the kernel, then child-rekey, then the old SAs deleted after
``delete_rekeyed_delay`` (5 s), with no event, as charon does. No IKE runs and no peer exists:
the figures it serves are the agent's (promotion, events, restart, restore), not traffic.

``standin.py shape`` prints the kernel's objects with what differs per SA taken out, to show
the stand-in installs what charon does (tests/lab/jobs/standin_shape.sh, at N=10).

SHAPE ``many``: one IKE_SA "many", CHILD_SAs c1..cN, 10.1.0.0/24[udp] === 10.2.0.0/24[udp/5000+i]
(lab_conf_many's). ``spokes``: N IKE_SAs s1..sN, one CHILD_SA each, to peer 198.18.x.y,
10.1.0.0/24 === 10.(100 + i / 250).(i % 250).0/24. Prints "ready" once it serves. No key
material is printed (the keys are random, in the kernel only).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(TESTS), str(TESTS / "support")]

from factories import charon_objects, child, vici_child  # noqa: E402
from vici_server import ViciTestServer  # noqa: E402

from swan_offload.backend import AddPolicy, AddState, DelState, NetlinkBackend  # noqa: E402
from swan_offload.xfrm import constants as c  # noqa: E402
from swan_offload.xfrm import objects as o  # noqa: E402

LOCAL = "192.0.2.1"
DELETE_REKEYED_DELAY = 5.0


def priority(sel: o.Selector) -> int:
    """get_priority() of charon 5.9.8 for a regular policy: POLICY_PRIORITY_DEFAULT."""
    bits = bin(sel.sport_mask).count("1") + bin(sel.dport_mask).count("1")
    return 400000 - (sel.prefixlen_s + sel.prefixlen_d) * 512 - (256 if sel.proto else 0) - bits * 4 - 1


def with_ports(policies: list[o.XfrmPolicy], port: int) -> list[o.XfrmPolicy]:
    """lab_conf_many's selectors: UDP, the remote side's port ``port`` (dport out, sport in/fwd)."""
    out = []
    for p in policies:
        ports = {"dport": port, "dport_mask": 0xFFFF} if p.dir == 1 else {"sport": port, "sport_mask": 0xFFFF}
        sel = replace(p.sel, proto=socket.IPPROTO_UDP, **ports)
        out.append(replace(p, sel=sel, priority=priority(sel)))
    return out


def spi() -> int:
    return 0xC0000000 | int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF


IP_XFRM_POLICY, IPV6_XFRM_POLICY = 17, 35  # linux/in.h, linux/in6.h


def ike_sockets() -> list[socket.socket]:
    """charon's IKE sockets (500 and 4500, IPv4 and IPv6) with the per-socket bypass policies
    kernel-netlink sets on them (bypass_socket()): a zeroed xfrm_userpolicy_info with the
    selector's family, dir in and out, action allow. They show in a policy dump as dir 3 and 4."""
    socks = []
    for fam, level, opt in ((socket.AF_INET, socket.IPPROTO_IP, IP_XFRM_POLICY), (socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_XFRM_POLICY)):
        for port in (500, 4500):
            sk = socket.socket(fam, socket.SOCK_DGRAM)
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sk.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
            for d in (0, 1):  # XFRM_POLICY_IN, XFRM_POLICY_OUT
                info = bytearray(168)  # selector 56, lifetime cfg 64, cur 32, priority, index, dir, action, flags, share
                struct.pack_into("=H", info, 40, fam)  # xfrm_selector.family
                info[160] = d
                sk.setsockopt(level, opt, bytes(info))
            socks.append(sk)
    return socks


def keyed(states: list[o.XfrmState]) -> list[o.XfrmState]:
    """Each SA its own random key (charon's are per SA), fresh counters as a new SA has, and
    charon's default CHILD_SA lifetimes: rekey_time 1 h less up to rand_time (10 %), life_time 1.1 h."""
    out = []
    for s in states:
        lft = o.LifetimeCfg(soft_add_expires_seconds=3600 - int.from_bytes(os.urandom(2), "big") % 360, hard_add_expires_seconds=3960)
        key = replace(s.aead, key=o.Secret(os.urandom(20))) if s.aead else None
        # tunnel mode: charon sets XFRM_STATE_AF_UNSPEC and leaves the SA's selector zeroed
        sel = o.Selector(0, "0.0.0.0", "0.0.0.0", 0, 0) if s.mode == c.XFRM_MODE_TUNNEL else s.sel
        flags = s.flags | (c.XFRM_STATE_AF_UNSPEC if s.mode == c.XFRM_MODE_TUNNEL else 0)
        out.append(replace(s, sel=sel, flags=flags, aead=key, lft=lft, curlft=o.LifetimeCur(), replay=o.ReplayState(), stats=o.Stats()))
    return out


def shape(ns: str | None) -> dict:
    """The kernel's states and policies with what differs per SA taken out (SPIs, keys, reqids as
    ranks, counters, lifetimes' random part): equal for charon and the stand-in at one N."""
    b = NetlinkBackend(ns)
    states, policies = b.dump_states(), b.dump_policies()
    # a reqid is named by the selectors of the policies that carry it (charon numbers them in
    # the order CHILD_SAs come up, which parallel initiates shuffle)
    named: dict[int, list[str]] = {}
    for p in policies:
        for t in p.templates:
            named.setdefault(t.reqid, []).append(repr(p.sel))
    ranks = {r: min(sels) for r, sels in named.items()}
    spis = {s.spi for s in states}

    def st(s: o.XfrmState) -> str:
        a = s.aead
        return repr((s.daddr, s.saddr, s.family, s.mode, s.proto, ranks.get(s.reqid), s.flags, s.replay_window, s.extra_flags,
                     (a.name, len(a.key), a.icv_len) if a else None, s.crypt, s.auth, s.sel, s.lft.hard_add_expires_seconds, s.lft.soft_add_expires_seconds > 0,
                     s.lft.soft_byte_limit, s.lft.hard_packet_limit, s.encap, s.mark, s.if_id, s.offload, s.sa_dir, s.replay_esn is not None, s.tfcpad))  # fmt: skip

    def pol(p: o.XfrmPolicy) -> str:
        tm = tuple((replace(t, spi=-1 if t.spi in spis else t.spi, reqid=0), ranks.get(t.reqid)) for t in p.templates)
        return repr((p.sel, p.dir, p.priority, p.action, p.flags, p.share, tm, p.mark, p.if_id, p.offload, p.lft))

    return {"states": sorted(st(s) for s in states), "policies": sorted(pol(p) for p in policies)}


class StandIn:
    def __init__(self, path: str, shape: str, n: int) -> None:
        self.shape, self.kernel = shape, NetlinkBackend()
        self.server = ViciTestServer(path)
        self.server.version = {"daemon": "charon", "version": "5.9.8", "sysname": "Linux", "release": os.uname().release, "machine": "x86_64"}
        self.server.commands["rekey"] = self.rekey
        self.server.commands["standin-pending"] = lambda _req: {"pending": str(len(self.rekeyed)), "rekeys": str(self.next_uid - 1 - n)}
        self.lock = threading.Lock()
        self.children: dict[int, object] = {}  # CHILD_SA index i -> its current ChildSA
        self.rekeyed: dict[int, object] = {}  # uniqueid -> a rekeyed ChildSA until its SAs are deleted
        self.next_uid = n + 1
        for i in range(1, n + 1):
            self.children[i] = self._child(i, i, spi(), spi())
        self._publish()
        objs = [self._objects(ch) for ch in self.children.values()]
        errs = self.kernel.apply([AddState(s) for st, _p in objs for s in st] + [AddPolicy(p) for _s, ps in objs for p in ps])
        bad = [e for e in errs if e is not None]
        if bad:
            raise SystemExit(f"stand-in: {len(bad)} kernel writes failed, first: {bad[0]}")

    def _child(self, i: int, uid: int, spi_in: int, spi_out: int):  # type: ignore[no-untyped-def]
        if self.shape == "many":
            return child(name=f"c{i}", ike="many", uniqueid=uid, reqid=i, spi_in=spi_in, spi_out=spi_out, local=LOCAL, remote="192.0.2.2",
                         lts=("10.1.0.0/24",), rts=("10.2.0.0/24",))  # fmt: skip
        return child(name=f"s{i}", ike=f"s{i}", ike_uniqueid=i, uniqueid=uid, reqid=i, spi_in=spi_in, spi_out=spi_out, local=LOCAL,
                     remote=f"198.18.{i // 250}.{i % 250 + 1}", lts=("10.1.0.0/24",), rts=(f"10.{100 + i // 250}.{i % 250}.0/24",))  # fmt: skip

    def _index(self, ch) -> int:  # type: ignore[no-untyped-def]
        return int(ch.name[1:])

    def _objects(self, ch):  # type: ignore[no-untyped-def]
        states, policies = charon_objects(ch)
        if self.shape == "many":
            policies = with_ports(policies, 5000 + self._index(ch))
        return keyed(states), policies

    def _section(self, ch, state: str = "INSTALLED") -> dict:  # type: ignore[no-untyped-def]
        sec = vici_child(ch, state)
        if self.shape == "many":
            i = self._index(ch)
            sec["local-ts"], sec["remote-ts"] = ["10.1.0.0/24[udp]"], [f"10.2.0.0/24[udp/{5000 + i}]"]
        return sec

    def _ike(self, name: str, uid: int, remote: str, kids: dict) -> dict:
        return {name: {"uniqueid": str(uid), "version": "2", "state": "ESTABLISHED", "local-host": LOCAL, "local-port": "500",
                       "remote-host": remote, "remote-port": "500", "child-sas": kids}}  # fmt: skip

    def _publish(self) -> None:
        """server.sas from the children (at start)."""
        if self.shape == "many":
            kids = {f"{ch.name}-{ch.uniqueid}": self._section(ch) for ch in self.children.values()}
            self.server.sas = [self._ike("many", 1, "192.0.2.2", kids)]
            return
        by_ike = sorted(self.children.values(), key=lambda ch: ch.ike_uniqueid)
        self.server.sas = [self._ike(ch.ike_name, ch.ike_uniqueid, ch.remote_host, {f"{ch.name}-{ch.uniqueid}": self._section(ch)}) for ch in by_ike]
        self.position = {ch.ike_uniqueid: k for k, ch in enumerate(by_ike)}

    def _republish(self, ch, gone=None) -> None:  # type: ignore[no-untyped-def]
        """The IKE_SA of ``ch`` in server.sas after a rekey or a delete, as charon changes the one
        IKE_SA: rebuilding every section made the stand-in's rekey O(N), 1.3 s at 10,000.
        Replaced, not changed in place: the server may be listing it meanwhile."""
        rows = [(x, "INSTALLED") for x in (self.children[self._index(ch)],)] + [
            (x, "REKEYED") for x in self.rekeyed.values() if x.ike_uniqueid == ch.ike_uniqueid]
        if self.shape == "many":
            kids = dict(self.server.sas[0]["many"]["child-sas"])
            if gone is not None:
                kids.pop(f"{gone.name}-{gone.uniqueid}", None)
            kids |= {f"{x.name}-{x.uniqueid}": self._section(x, st) for x, st in rows if x.name == ch.name}
            self.server.sas = [self._ike("many", 1, "192.0.2.2", kids)]
            return
        kids = {f"{x.name}-{x.uniqueid}": self._section(x, st) for x, st in rows}
        self.server.sas[self.position[ch.ike_uniqueid]] = self._ike(ch.ike_name, ch.ike_uniqueid, ch.remote_host, kids)

    def rekey(self, req: dict) -> dict:
        """charon's rekey of one CHILD_SA, as seen from the kernel and VICI."""
        with self.lock:
            uid = int(req.get("child-id", 0))
            old = next((ch for ch in self.children.values() if ch.uniqueid == uid), None)
            if old is None:
                return {"success": "no", "errmsg": "no matching CHILD_SA found"}
            new = replace(old, uniqueid=self.next_uid, spi_in=spi(), spi_out=spi())
            self.next_uid += 1
            states, policies = self._objects(new)
            # the new SAs first (inbound, then outbound), then the OUT policy names the new SPI
            errs = self.kernel.apply([AddState(s) for s in reversed(states)] + [AddPolicy(p, update=True) for p in policies])
            if any(errs):
                return {"success": "no", "errmsg": f"kernel: {next(e for e in errs if e)}"}
            self.children[self._index(new)] = new
            self.rekeyed[old.uniqueid] = old
            self._republish(new)
        ike = self._ike(new.ike_name, new.ike_uniqueid, new.remote_host, {new.name: {"old": self._section(old, "REKEYED"), "new": self._section(new)}})
        self.server.emit("child-rekey", ike)
        threading.Timer(DELETE_REKEYED_DELAY, self._delete, (old,)).start()
        return {"success": "yes"}

    def _delete(self, old) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            states, _p = charon_objects(old)
            self.kernel.apply([DelState(s.id) for s in states])
            self.rekeyed.pop(old.uniqueid, None)
            self._republish(old, gone=old)


def main() -> None:
    if sys.argv[1] == "shape":
        import json

        print(json.dumps(shape(None)), flush=True)
        return
    path, shape_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.monotonic()
    s = StandIn(path, shape_name, n)
    socks = ike_sockets()  # noqa: F841 - held open: the bypasses live as long as the sockets
    s.server.start()
    print(f"ready {n} CHILD_SAs ({shape_name}) in {time.monotonic() - t0:.1f} s", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
