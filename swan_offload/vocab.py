"""The agent's words for what it decides, in one place that imports nothing of the package.

``Mode``: where a CHILD_SA ends (status "mode", metrics "outcome"). ``Cause``: why it is not
in packet offload, a fixed vocabulary metrics label decisions by (the reason text, e.g. the
device's own words, is unbounded and stays in status and logs). Both are str enums: they are
their values in JSON, labels, comparisons and dictionary keys.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    PACKET = "packet"
    CRYPTO = "crypto"
    SOFTWARE = "software"
    KEEP = "keep"  # left as charon installed it
    OFF = "off"  # offload off for this connection
    NATIVE = "native"  # charon offloads it itself
    PENDING = "pending"  # SAs not (yet) in the kernel, or being rekeyed or deleted


class Cause(StrEnum):
    NONE = ""  # in packet offload
    CONFIGURED = "configured"
    WAITING = "pending"
    CHARON_OFFLOADS = "native"
    KERNEL = "kernel"
    NO_DEVICE = "no_device"
    DEVICE_DOWN = "device_down"
    DEVICE_REFUSED = "device_refused"
    REQID = "reqid"
    SA_UNSUPPORTED = "sa_unsupported"
    NO_POLICIES = "no_policies"
    PRIORITY = "priority"
    SHADOWED = "shadowed"
