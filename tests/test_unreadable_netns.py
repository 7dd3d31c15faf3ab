"""A list-sas entry the agent cannot parse, against the real VICI client and the host kernel.

The daemon reads charon (the protocol-faithful test server) and holds its policies in a
private network namespace: what an unreadable IKE_SA owns there must stay exactly as it is,
and what a readable entry no longer lists must go. (States need ESP, which this host kernel
lacks; the policies are what a wrong retirement deletes, black-holing the tunnel.)
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request

import pytest
from factories import child, vici_ike
from helpers import wait_for
from support.vici_server import ViciTestServer

from swan_offload import config
from swan_offload import planner as pl
from swan_offload.backend import AddPolicy, NetlinkBackend
from swan_offload.capability import KernelCaps
from swan_offload.daemon import Daemon
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

pytestmark = pytest.mark.netns


def agent_policy(reqid: int, dst: str, direction: int) -> o.XfrmPolicy:
    sel = o.Selector(socket.AF_INET, dst, "10.1.0.0", 24, 24, user=pl.AGENT_TAG)
    if direction == c.XFRM_POLICY_IN:
        sel = o.Selector(socket.AF_INET, "10.1.0.0", dst, 24, 24, user=pl.AGENT_TAG)
    t = o.Template("192.0.2.2", 0, c.IPPROTO_ESP, socket.AF_INET, "192.0.2.1", reqid, c.XFRM_MODE_TUNNEL)
    return o.XfrmPolicy(sel, direction, 60000 + reqid, templates=(t,))


def held(kernel: NetlinkBackend) -> set[tuple[int | None, int]]:
    """(reqid or None for a bypass, dir) of every agent policy in the kernel."""
    return {(p.templates[0].reqid if p.templates else None, p.dir) for p in kernel.dump_policies() if pl.is_agent_policy(p)}


def test_unreadable_entry_keeps_its_policies_in_the_kernel_and_is_counted(netns, tmp_path, caplog):
    kernel = NetlinkBackend(netns)
    bypass = o.XfrmPolicy(o.Selector(socket.AF_INET, "0.0.0.0", "192.0.2.1", 0, 32, proto=c.IPPROTO_UDP, sport=500,
                                     sport_mask=0xFFFF, user=pl.AGENT_TAG), c.XFRM_POLICY_OUT, 32)
    pols = [agent_policy(2, "10.2.0.0", d) for d in (c.XFRM_POLICY_OUT, c.XFRM_POLICY_IN)]
    pols += [agent_policy(3, "10.3.0.0", d) for d in (c.XFRM_POLICY_OUT, c.XFRM_POLICY_IN)]
    assert kernel.apply([AddPolicy(p) for p in [*pols, bypass]]) == [None] * 5
    everything = {(2, 0), (2, 1), (3, 0), (3, 1), (None, 1)}
    assert held(kernel) == everything

    b = child(name="b", ike="gw2", ike_uniqueid=2, uniqueid=2, reqid=2, spi_in=0xC0000002, spi_out=0xC1000002)
    broken = vici_ike("gw2", [(b, "INSTALLED")], uniqueid=2)
    broken["gw2"]["child-sas"]["b-2"]["spi-out"] = "not hex"
    server = ViciTestServer(tmp_path / "charon.vici").start()
    server.sas = [broken, vici_ike("gw3", [], uniqueid=3)]  # gw3 parses: its reqid 3 child is gone
    # idle resyncs every 0.2 s however long they take (share 1): the readable entry comes by one
    cfg = config.Config(vici_socket=server.path, status_file=str(tmp_path / "status.json"), resync_seconds=0.2, resync_share=1.0,
                        reconnect_max_seconds=0.2, metrics_listen="127.0.0.1:0", control_socket="")
    d = Daemon(cfg, netns=netns, caps=KernelCaps(True, "test", "6.12"))
    t = threading.Thread(target=d.run, daemon=True)
    caplog.set_level(logging.ERROR, logger="swan_offload")
    t.start()
    try:
        wait_for(lambda: d.reconciler.runs >= 2, what="two resyncs")
        # the real kernel: the unreadable IKE_SA's policies and the bypass as they were,
        # the parsed, absent CHILD_SA's gone
        assert held(kernel) == {(2, 0), (2, 1), (None, 1)}
        assert d.unreadable >= 2 and d.status()["agent"]["vici_unreadable"] == ["ike gw2 child b-2.spi-out: not a number: 'not hex'"]
        assert any("list-sas: ike gw2 child b-2.spi-out: not a number" in r.getMessage() and "left as they are" in r.getMessage() for r in caplog.records)
        wait_for(lambda: d.metrics_server is not None, what="metrics server")
        url = f"http://127.0.0.1:{d.metrics_server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        count = next(line for line in text.splitlines() if line.startswith("swan_offload_vici_unreadable_total "))
        assert float(count.split()[1]) >= 2, count
        # the entry parses and no longer lists the IKE_SA: now it is retired, bypass with it
        server.sas = [vici_ike("gw3", [], uniqueid=3)]
        wait_for(lambda: held(kernel) == set(), what="retirement once readable")
        assert d.status()["agent"]["vici_unreadable"] == []
    finally:
        d.stop()
        t.join(5)
        server.stop()
        kernel.close()
    assert not server.errors
