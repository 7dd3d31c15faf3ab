"""Does this kernel do packet offload at all? Found by asking it, not by reading headers.

Kernels before 6.2 know ``XFRM_OFFLOAD_PACKET`` in their headers but ignore
offload on policies; kernels built without CONFIG_XFRM_OFFLOAD ignore it too.
A probe policy offloaded to the loopback device tells them apart: a kernel
with the offload path refuses it with a text ("Policy offload is not
supported"), a kernel without it stores the policy and drops the request.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass

from .backend import AddPolicy, Backend, DelPolicy
from .planner import AGENT_TAG
from .xfrm import constants as c
from .xfrm.objects import Offload, Selector, XfrmPolicy

MIN_KERNEL = (6, 2)
# a selector nobody uses: TEST-NET-3 to TEST-NET-2 hosts, protocol 253 (RFC 3692 experimental)
PROBE_SEL = Selector(socket.AF_INET, "198.51.100.254", "203.0.113.254", 32, 32, proto=253, user=AGENT_TAG)


@dataclass(frozen=True)
class KernelCaps:
    packet_offload: bool
    reason: str
    release: str


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numbers of a dotted version: "6.12.117+deb13-amd64" -> (6, 12, 117), "5.9.10dr1" -> (5, 9, 10)."""
    out = []
    for part in text.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(out)


def probe(backend: Backend, release: str | None = None, loopback_ifindex: int = 1) -> KernelCaps:
    release = release or os.uname().release
    if version_tuple(release)[:2] < MIN_KERNEL:
        return KernelCaps(False, f"kernel {release} is older than 6.2 and has no packet offload", release)
    pol = XfrmPolicy(PROBE_SEL, c.XFRM_POLICY_OUT, 1, action=c.XFRM_POLICY_BLOCK, offload=Offload(loopback_ifindex, c.XFRM_OFFLOAD_PACKET))
    err = backend.apply([AddPolicy(pol)])[0]
    if err is not None and err.errno in (errno.EPERM, errno.EACCES):
        raise PermissionError(err.errno, "the kernel refused XFRM configuration: CAP_NET_ADMIN is needed")
    if err is not None:
        # the offload path exists and judged the device: the kernel has packet offload
        return KernelCaps(True, f"kernel {release} has packet offload (it judged a probe policy on lo: {err.reason!r})", release)
    stored = [p for p in backend.dump_policies() if p.sel == PROBE_SEL and p.dir == c.XFRM_POLICY_OUT]
    backend.apply([DelPolicy(pol.id, "delete offload probe policy")])
    if stored and stored[0].offload is None:
        return KernelCaps(False, f"kernel {release} ignores offload requests (built without CONFIG_XFRM_OFFLOAD?)", release)
    return KernelCaps(True, f"kernel {release} has packet offload", release)
