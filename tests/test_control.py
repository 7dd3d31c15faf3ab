"""The control socket over a real unix socket: permissions, stale sockets, a second daemon, errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from swan_offload import control
from swan_offload.cli import status_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path):
    calls = []
    s = control.ControlServer(str(tmp_path / "run" / "control.sock"), {"status": lambda: calls.append(1) or {"children": [], "n": len(calls)}})
    s.start()
    yield s
    s.close()


def test_status_round_trip_on_a_root_only_socket(server):
    assert os.stat(server.path).st_mode & 0o777 == 0o600
    assert control.request(str(server.path)) == {"children": [], "n": 1}
    assert control.request(str(server.path))["n"] == 2


def test_unknown_command_is_an_error_not_a_crash(server):
    with pytest.raises(control.ControlError, match="unknown command"):
        control.request(str(server.path), "flush")
    assert control.request(str(server.path))["children"] == []


def test_garbage_and_silent_clients_do_not_stop_the_server(server):
    for payload in (b"\xff" * 4096, b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(server.path))
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.recv(1024)
    assert control.request(str(server.path))["children"] == []


def test_a_dead_daemons_socket_is_replaced_a_live_one_is_not(tmp_path):
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a killed daemon leaves
    with pytest.raises(control.DaemonAbsent):
        control.request(str(path))
    first = control.ControlServer(str(path), {"status": dict})
    first.start()
    try:
        second = control.ControlServer(str(path), {"status": dict})
        with pytest.raises(OSError, match="another swan-offload daemon"):
            second.start()
        assert control.request(str(path)) == {}  # the first still answers
    finally:
        first.close()
    assert not path.exists()


def test_a_file_in_the_way_is_not_deleted(tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        control.ControlServer(str(path), {"status": dict}).start()
    assert path.read_text() == "precious"


def test_a_failing_handler_answers_with_an_error(tmp_path):
    s = control.ControlServer(str(tmp_path / "c.sock"), {"status": lambda: 1 / 0})
    s.start()
    try:
        with pytest.raises(control.ControlError, match="status failed: ZeroDivisionError"):
            control.request(str(s.path))
    finally:
        s.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_user_is_told_status_is_root_only():
    d = tempfile.mkdtemp(prefix="swoff-ctl-")
    os.chmod(d, 0o755)
    s = control.ControlServer(os.path.join(d, "control.sock"), {"status": dict})
    s.start()
    try:
        cfg = os.path.join(d, "c.toml")
        with open(cfg, "w") as f:
            f.write(f'[agent]\ncontrol_socket = "{s.path}"\n')
        os.chmod(cfg, 0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "swan_offload.cli",
                            "-c", cfg, "status"], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert r.returncode == 2 and "root-only" in r.stderr, (r.returncode, r.stderr)
    finally:
        s.close()
        shutil.rmtree(d)


def test_status_table_reads_at_a_glance():
    data = {
        "agent": {"charon": "charon 5.9.8", "vici_connected": True, "last_event": 1000.0, "reconcile_runs": 7,
                  "kernel_reason": "kernel 6.12: packet offload available", "refusing_devices": {"3": "no room"}},
        "children": [
            {"ike": "gw", "child": "net", "uniqueid": 4, "reqid": 1, "spi_in": "c0000001", "spi_out": "c1000001",
             "mode": "packet", "device": "eth0", "reason": "", "since": 940.0},
            {"ike": "gw", "child": "voip", "uniqueid": 5, "reqid": 2, "spi_in": "c0000002", "spi_out": "c1000002",
             "mode": "software", "device": None, "reason": "packet offload refused by eth0: no room", "since": 1000.0,
             "cause": "device_refused"},
        ],
    }
    out = status_table(data, now=1060.0)
    lines = out.splitlines()
    assert lines[0].startswith("charon: charon 5.9.8   vici: up   last event: 1m00s ago   reconciles: 7")
    assert "device 3 refuses packet offload: no room" in out
    assert "2 CHILD_SA(s): 1 packet, 1 software" in out
    assert lines[-2].split() == ["gw/net#4", "1", "c0000001", "c1000001", "packet", "eth0", "2m00s"]
    assert lines[-1].endswith("packet offload refused by eth0: no room") and " - " in lines[-1]


def test_status_at_hub_scale_summarises_on_one_screen_and_filters():
    """10,000 CHILD_SAs: the summary stays a few lines (counts by mode and cause, devices); the
    table can be cut to what is not offloaded, or to one connection."""
    kids = [{"ike": f"spoke{i}", "child": "net", "uniqueid": i, "reqid": i, "spi_in": f"c{i:07x}", "spi_out": f"c1{i:06x}",
             "mode": "packet", "device": "eth0", "reason": "", "cause": "", "since": 900.0} for i in range(10000)]
    for i in (17, 4242):
        kids[i] |= {"mode": "crypto", "device": "eth0", "reason": "IPv6 in IPv4 tunnel can't be carried", "cause": "sa_unsupported"}
    kids[9999] |= {"mode": "software", "device": None, "reason": "no device owns the local address", "cause": "no_device"}
    data = {"agent": {"vici_connected": True, "kernel_reason": "ok", "vici_unreadable": ["ike spoke5: missing local-host"]},
            "children": kids}
    summary = status_table(data, 1000.0, summary=True).splitlines()
    assert len(summary) <= 8, summary
    assert "10000 CHILD_SA(s): 2 crypto, 9997 packet, 1 software" in summary
    assert "  not packet: 2 crypto (sa_unsupported), 1 software (no_device)" in summary
    assert "  devices: eth0 2 crypto, eth0 9997 packet" in summary
    assert any("spoke5: missing local-host" in line for line in summary)
    bad = status_table(data, 1000.0, not_offloaded=True).splitlines()
    assert "showing 3 of 10000" in bad and [ln.split()[0] for ln in bad[-3:]] == ["spoke17/net#17", "spoke4242/net#4242", "spoke9999/net#9999"]
    one = status_table(data, 1000.0, connection="spoke4242").splitlines()
    assert one[-1].split()[0] == "spoke4242/net#4242" and "showing 1 of 10000" in one
    assert status_table(data, 1000.0, connection="nobody").splitlines() == summary  # nothing to list
