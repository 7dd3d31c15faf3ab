"""The driver a device reports (ETHTOOL_GDRVINFO on the host kernel, in a private netns), and
which drivers and releases steer policy addresses exactly (drvinfo.exact_address_steering)."""

from __future__ import annotations

import subprocess

import pytest
from helpers import skip_unless_required

from swan_offload import drvinfo
from swan_offload.backend import NetlinkBackend


@pytest.mark.netns
def test_the_backend_reads_each_device_driver_and_its_steering(netns):
    ip = ["ip", "-n", netns, "link"]
    made = next((t for t in ("dummy", "bridge", "veth") if subprocess.run(ip + ["add", "d0", "type", t], capture_output=True).returncode == 0), None)
    if made is None:
        skip_unless_required("the kernel has no dummy, bridge or veth devices")
    sock = drvinfo.ioctl_socket(netns)
    driver, _fw = drvinfo.driver_info(sock, "d0")
    assert driver == made
    assert drvinfo.driver_info(sock, "no-such-device") == ("", "")
    sock.close()
    _by_addr, by_name = NetlinkBackend(netns).devices()
    assert by_name["d0"].exact_addresses is False


def test_mlx5_before_6_15_and_swsim_modelling_it_steer_addresses_exactly():
    assert drvinfo.exact_address_steering("mlx5_core", "28.39.1002", (6, 12))
    assert not drvinfo.exact_address_steering("mlx5_core", "28.39.1002", (6, 15))
    assert drvinfo.exact_address_steering("swsim", "steer 6.12", (6, 12))
    assert not drvinfo.exact_address_steering("swsim", "steer 6.15", (6, 12))
    assert not drvinfo.exact_address_steering("veth", "", (6, 1))
    assert drvinfo.release("6.12.117+deb13-amd64") == (6, 12) and drvinfo.release("6.15.0-rc1") == (6, 15)
