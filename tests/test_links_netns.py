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
