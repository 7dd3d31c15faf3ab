"""The XFRM monitor on the host kernel: charon's changes wake the daemon, the agent's own do not."""

from __future__ import annotations

import queue
import socket

import pytest

from swan_offload.backend import AddPolicy, DelPolicy, NetlinkBackend
from swan_offload.monitor import XfrmMonitor
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

pytestmark = pytest.mark.netns


def test_monitor_sees_others_not_itself(netns):
    agent, other = NetlinkBackend(netns), NetlinkBackend(netns)
    q: queue.Queue = queue.Queue()
    mon = XfrmMonitor(q, agent.sock.port, netns)
    mon.start()
    try:
        sel = o.Selector(socket.AF_INET, "10.2.0.0", "10.1.0.0", 24, 24)
        pol = o.XfrmPolicy(sel, c.XFRM_POLICY_OUT, 100)
        assert agent.apply([AddPolicy(pol), DelPolicy(pol.id)]) == [None, None]
        with pytest.raises(queue.Empty):
            q.get(timeout=1.0)
        assert mon.seen >= 2  # the notifications arrived, and were recognised as the agent's own
        assert other.apply([AddPolicy(pol)]) == [None]
        assert q.get(timeout=2.0) == ("xfrm", None)  # a policy without templates: no reqid locates it
    finally:
        mon.stop()
        mon.join(3)
        agent.close()
        other.close()
