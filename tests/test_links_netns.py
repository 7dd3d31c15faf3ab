"""Link events from the host kernel: a device going down and up reaches the daemon's queue,
and the backend reads the same flag in its device snapshot."""

from __future__ import annotations

import queue
import struct
import subprocess

import pytest
from helpers import skip_unless_required

from swan_offload.backend import NetlinkBackend
from swan_offload.links import RTM_DELLINK, RTM_NEWLINK, LinkMonitor, parse_link_events


def _link_msg(mtype: int, index: int, flags: int) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def test_parse_link_events():
    data = _link_msg(RTM_NEWLINK, 7, 0x1043) + _link_msg(RTM_NEWLINK, 7, 0x1002) + _link_msg(RTM_DELLINK, 9, 0x1)
    assert list(parse_link_events(data)) == [(7, True), (7, False), (9, False)]
    assert list(parse_link_events(data[:-3])) == [(7, True), (7, False)]  # a truncated message is dropped


def _next_for(q: queue.Queue, index: int) -> tuple:
    while True:
        kind, payload = q.get(timeout=3.0)
        if kind == "link" and payload and payload[0] == index:
            return payload


@pytest.mark.netns
def test_monitor_reports_down_up_and_delete(netns):
    ip = ["ip", "-n", netns, "link"]
    # any software device does: this kernel has no modules, so take the first type it has built in
    if not any(subprocess.run(ip + ["add", "off0", "type", t], capture_output=True).returncode == 0 for t in ("dummy", "bridge")):
        skip_unless_required("the kernel has neither dummy nor bridge devices")
    subprocess.run(ip + ["set", "off0", "up"], check=True)
    b = NetlinkBackend(netns)
    index = b.devices()[1]["off0"].ifindex
    q: queue.Queue = queue.Queue()
    heard: list[tuple[int, bool]] = []  # on_change, in the monitor's thread (the daemon restores there)
    mon = LinkMonitor(q, netns, lambda i, up: heard.append((i, up)))
    mon.start()
    try:
        subprocess.run(ip + ["set", "off0", "down"], check=True)
        assert _next_for(q, index) == (index, False)
        assert b.devices()[1]["off0"].up is False
        subprocess.run(ip + ["set", "off0", "up"], check=True)
        assert _next_for(q, index) == (index, True)
        assert b.devices()[1]["off0"].up is True
        subprocess.run(ip + ["del", "off0"], check=True)
        assert _next_for(q, index) == (index, False)
        assert [(i, up) for i, up in heard if i == index] == [(index, False), (index, True), (index, False)]
    finally:
        mon.stop()
        mon.join(3)
        b.close()


@pytest.mark.netns
def test_the_device_dump_reads_what_pyroute2_reads(netns):
    """links.read_devices (struct over rtnetlink) against pyroute2's IPRoute on the same
    netns: names, indexes, IFF_UP, IPv4 and IPv6 addresses (IFA_ADDRESS, else IFA_LOCAL)."""
    from pyroute2 import IPRoute

    from swan_offload.links import read_devices

    ip = ["ip", "-n", netns]
    if not any(subprocess.run(ip + ["link", "add", "off0", "type", t], capture_output=True).returncode == 0 for t in ("dummy", "bridge")):
        skip_unless_required("the kernel has neither dummy nor bridge devices")
    for i in range(1, 40):  # more than one datagram of addresses
        subprocess.run(ip + ["addr", "add", f"192.0.2.{i}/24", "dev", "off0"], check=True)
    subprocess.run(ip + ["-6", "addr", "add", "2001:db8::1/64", "dev", "off0", "nodad"], check=True)
    subprocess.run(ip + ["link", "set", "off0", "up"], check=True)
    subprocess.run(ip + ["link", "add", "off1", "type", "dummy"], capture_output=True)
    links, addresses = read_devices(netns)
    with IPRoute(netns=netns) as ipr:
        want_links = sorted((x["index"], x.get_attr("IFLA_IFNAME"), bool(x["flags"] & 1)) for x in ipr.get_links())
        want_addrs = sorted((a["index"], a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")) for a in ipr.get_addr())
    assert sorted(links) == want_links and ("off0" in {n for _i, n, up in links if up})
    assert sorted(addresses) == want_addrs and len(addresses) >= 40 and any(a == "2001:db8::1" for _i, a in addresses)
    by_addr, by_name = NetlinkBackend(netns).devices()
    assert by_addr["192.0.2.39"] is by_name["off0"] and by_addr["2001:db8::1"].name == "off0" and by_name["off0"].up
