"""Builders for CHILD_SAs and the kernel objects charon installs for them (as 5.9.8 does)."""

from __future__ import annotations

import ipaddress
import socket

from swan_offload.model import ChildSA, TrafficSelector
from swan_offload.planner import Device, KernelView
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

KEY = bytes.fromhex("00112233445566778899aabbccddeeff01020304")
ETH = Device(2, "eth0")


def child(name="net", uniqueid=1, reqid=1, spi_in=0xC0000001, spi_out=0xC1000001, lts=("10.1.0.0/24",),
          rts=("10.2.0.0/24",), local="192.0.2.1", remote="192.0.2.2", ike="gw", **kw) -> ChildSA:
    return ChildSA(
        ike_name=ike, ike_uniqueid=kw.pop("ike_uniqueid", 1), name=name, uniqueid=uniqueid, reqid=reqid, state="INSTALLED",
        mode=kw.pop("mode", "TUNNEL"), protocol=kw.pop("protocol", "ESP"), encap=kw.pop("encap", False),
        spi_in=spi_in, spi_out=spi_out, local_host=local, remote_host=remote, local_port=500, remote_port=500,
        local_ts=tuple(TrafficSelector(t) for t in lts), remote_ts=tuple(TrafficSelector(t) for t in rts), **kw,
    )


def charon_priority(sel: o.Selector) -> int:
    """kernel_netlink_ipsec.c get_priority() for a regular (non-trap) policy without ports."""
    return 400000 - (sel.prefixlen_s + sel.prefixlen_d) * 512 - (256 if sel.proto else 0) - 1


def _sel(src: str, dst: str) -> o.Selector:
    s, d = ipaddress.ip_network(src), ipaddress.ip_network(dst)
    fam = socket.AF_INET6 if s.version == 6 else socket.AF_INET
    return o.Selector(fam, str(d.network_address), str(s.network_address), d.prefixlen, s.prefixlen)


def charon_objects(ch: ChildSA, esn: bool = False, mark: o.Mark | None = None, if_id: int | None = None, encap: bool = False):
    """The two states and in/out/fwd policies charon installs for ``ch``."""
    fam = socket.AF_INET6 if ":" in ch.local_host else socket.AF_INET
    mode = c.XFRM_MODE_TUNNEL if ch.mode == "TUNNEL" else c.XFRM_MODE_TRANSPORT
    states, policies = [], []
    for daddr, saddr, spi, inbound in ((ch.remote_host, ch.local_host, ch.spi_out, False), (ch.local_host, ch.remote_host, ch.spi_in, True)):
        any_sel = o.Selector(fam, "::" if fam == 10 else "0.0.0.0", "::" if fam == 10 else "0.0.0.0", 0, 0)
        states.append(o.XfrmState(
            sel=any_sel, daddr=daddr, spi=spi, proto=c.IPPROTO_ESP, saddr=saddr, family=fam, mode=mode, reqid=ch.reqid,
            # kernel_netlink_ipsec.c add_sa(): no window for an outbound SA (1 with ESN, which the kernel requires)
            replay_window=0 if esn or not inbound else 32, flags=c.XFRM_STATE_ESN if esn else 0,
            curlft=o.LifetimeCur(1000, 10, 1_700_000_000, 1_700_000_001),
            aead=o.Algo("rfc4106(gcm(aes))", o.Secret(KEY), 160, icv_len=128),
            replay=None if esn else o.ReplayState(oseq=0 if inbound else 500, seq=400 if inbound else 0, bitmap=0xFF),
            replay_esn=(o.ReplayEsn(4, 0, 400, 0, 0, 128, (1, 2, 3, 4)) if inbound else o.ReplayEsn(1, 0xFFFFFFF0, 0, 0, 0, 1, (0,))) if esn else None,
            mark=mark, if_id=if_id,
            encap=o.Encap(c.UDP_ENCAP_ESPINUDP, 4500, 4500, "") if encap else None,
        ))
    for lts in ch.local_ts:
        for rts in ch.remote_ts:
            out_sel = _sel(lts.text, rts.text)
            in_sel = _sel(rts.text, lts.text)
            # charon (5.9.x) names the outbound SA's SPI in the OUT template; a rekey updates it
            t_out = o.Template(ch.remote_host, ch.spi_out, c.IPPROTO_ESP, fam, ch.local_host, ch.reqid, mode)
            t_in = o.Template(ch.local_host, 0, c.IPPROTO_ESP, fam, ch.remote_host, ch.reqid, mode)
            policies.append(o.XfrmPolicy(out_sel, c.XFRM_POLICY_OUT, charon_priority(out_sel), templates=(t_out,), mark=mark, if_id=if_id))
            policies.append(o.XfrmPolicy(in_sel, c.XFRM_POLICY_IN, charon_priority(in_sel), templates=(t_in,), mark=mark, if_id=if_id))
            policies.append(o.XfrmPolicy(in_sel, c.XFRM_POLICY_FWD, charon_priority(in_sel), templates=(t_in,), mark=mark, if_id=if_id))
    return states, policies


def view_for(children, devices=(ETH,), **kw) -> KernelView:
    states, policies = [], []
    for ch in children:
        s, p = charon_objects(ch, **kw)
        states += s
        policies += p
    addrs = {ch.local_host: devices[0] for ch in children}
    return KernelView.build(states, policies, addresses=addrs, devices={d.name: d for d in devices})


def vici_child(ch: ChildSA, state: str = "INSTALLED") -> dict:
    """The child section charon 5.9.8 sends for ``ch`` (values as strings)."""
    return {
        "name": ch.name, "uniqueid": str(ch.uniqueid), "reqid": str(ch.reqid), "state": state,
        "mode": ch.mode, "protocol": ch.protocol, "spi-in": f"{ch.spi_in:08x}", "spi-out": f"{ch.spi_out:08x}",
        "encr-alg": "AES_GCM_16", "encr-keysize": "128", "dh-group": "CURVE_25519",
        "local-ts": [t.text for t in ch.local_ts], "remote-ts": [t.text for t in ch.remote_ts],
        "install-time": "1", "rekey-time": "3000", "life-time": "3500",
    }


def vici_ike(name: str, children: list[tuple[ChildSA, str]], uniqueid: int = 1, local="192.0.2.1", remote="192.0.2.2") -> dict:
    return {name: {
        "uniqueid": str(uniqueid), "version": "2", "state": "ESTABLISHED",
        "local-host": local, "local-port": "500", "remote-host": remote, "remote-port": "500",
        "child-sas": {f"{ch.name}-{ch.uniqueid}": vici_child(ch, st) for ch, st in children},
    }}
