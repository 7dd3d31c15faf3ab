"""What driver runs a device (ETHTOOL_GDRVINFO), and the steering defects known by driver and release.

mlx5 before Linux 6.15 programs an offloaded policy's addresses into its TX steering exactly,
the prefix length ignored (``ipsec_fs.c`` ``setup_fte_addr4/6``; fixed by "net/mlx5e:
Properly match IPsec subnet addresses"): a packet of 10.1.0.0/24 other than 10.1.0.0 itself
misses the device's policy rule and leaves as it is, in clear. The kernel cannot tell: its own
lookup honours the prefix and hands the packet over. So the agent has to know.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
_DRVINFO = struct.Struct("=I32s32s32s32s32s12s5I")  # cmd, driver, version, fw_version, bus_info, erom_version, ...
_IFREQ = struct.Struct("@16sP16x")  # struct ifreq: ifr_name, ifr_data (a pointer), the union's rest
PREFIX_STEERING_SINCE = (6, 15)


def ioctl_socket(netns: str | None = None) -> socket.socket:
    """A socket to ask devices with, in ``netns`` if given (a socket keeps the namespace it was
    made in; pyroute2 makes one there in a child process, so make it once)."""
    if netns:
        from pyroute2 import netns as _netns

        sock: socket.socket = _netns.create_socket(netns, socket.AF_INET, socket.SOCK_DGRAM, 0)
        return sock
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def driver_info(sock: socket.socket, name: str) -> tuple[str, str]:
    """(driver, firmware version) of interface ``name``; ("", "") when the device does not say."""
    buf = array.array("B", _DRVINFO.pack(ETHTOOL_GDRVINFO, *(b"",) * 6, *(0,) * 5))
    addr, _len = buf.buffer_info()
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _IFREQ.pack(name.encode()[:15], addr))
    except OSError:  # EOPNOTSUPP (no drvinfo: lo, a bridge), ENODEV (gone meanwhile)
        return "", ""
    fields = _DRVINFO.unpack(buf.tobytes())
    return _text(fields[1]), _text(fields[3])


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def release(text: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string (this kernel's when None)."""
    parts = (text or os.uname().release).split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def exact_address_steering(driver: str, firmware: str, kernel: tuple[int, int]) -> bool:
    """Whether the device matches a policy's addresses exactly in its TX steering.

    A ConnectX (mlx5_core) does on kernels before 6.15. swsim, the lab's model of one, runs on
    the lab's 6.12 whatever it models: its firmware version says which ("steer 6.12")."""
    if driver == "mlx5_core":
        return kernel < PREFIX_STEERING_SINCE
    if driver == "swsim":
        return firmware == "steer 6.12"
    return False
