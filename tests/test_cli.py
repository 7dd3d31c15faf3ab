"""CLI: bad config and missing privileges end with a clear message and nothing touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from swan_offload import config
from swan_offload.cli import main


def test_bad_config_names_file_key_reason(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[[rule]]\nmatch = "*"\nfallback = "sometimes"\n')
    assert main(["-c", str(p), "status"]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "rule[0].fallback" in err and "'sometimes' is not one of crypto, software, keep" in err


@pytest.mark.parametrize(
    "text,key",
    [
        ("[agent]\npriority_top = 99999\n", "agent.priority_top"),
        ("[agent]\nike_ports = [0]\n", "agent.ike_ports"),
        ("[vici]\nsockett = 'x'\n", "vici.sockett"),
        ("[agent\n", "<syntax>"),
        ("[agent]\nseq_margin = true\n", "agent.seq_margin"),
        ("[agent]\nrekey_after_restore = 1\n", "agent.rekey_after_restore"),
        ("[agent]\nresync_share = 0\n", "agent.resync_share"),
        ("[agent]\nresync_share = 1.5\n", "agent.resync_share"),
        ("[agent]\nmove_batch = 0\n", "agent.move_batch"),
        ("[agent]\nmove_batch = 8.5\n", "agent.move_batch"),
    ],
)
def test_config_errors(text, key):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "f.toml")
    assert e.value.key == key


def test_shipped_config_is_valid_and_matches_defaults():
    shipped = config.load(os.path.join(os.path.dirname(__file__), "..", "conf", "swan-offload.toml"))
    assert shipped.rules == config.Config().rules and shipped.priority_top == config.Config().priority_top
    assert (shipped.resync_seconds, shipped.resync_share) == (config.Config().resync_seconds, config.Config().resync_share)
    assert shipped.move_batch == config.Config().move_batch
    assert config.parse("[agent]\nmove_batch = 4\n", "f.toml").move_batch == 4


def test_status_without_daemon_says_how_to_start(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text(f'[agent]\ncontrol_socket = "{tmp_path}/none.sock"\n')
    assert main(["-c", str(p), "status"]) == 3
    err = capsys.readouterr().err
    assert "no daemon is running" in err and "systemctl start swan-offload" in err and "swan-offload run" in err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to an unprivileged user")
def test_plan_without_cap_net_admin():
    d = tempfile.mkdtemp(prefix="swoff-cli-")
    os.chmod(d, 0o755)
    p = os.path.join(d, "c.toml")
    with open(p, "w") as f:
        f.write(f'[vici]\nsocket = "{d}/v.sock"\n')
    os.chmod(p, 0o644)
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", sys.executable, "-m", "swan_offload.cli",
         "-c", str(p), "plan"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    shutil.rmtree(d)
    assert r.returncode == 2, r.stderr
    assert "CAP_NET_ADMIN" in r.stderr


@pytest.mark.parametrize(
    "text,expected",
    [("6.12.117+deb13-amd64", (6, 12, 117)), ("6.1.0-28-amd64", (6, 1, 0)), ("5.9.10dr1", (5, 9, 10)), ("5.9.8", (5, 9, 8)), ("", ())],
)
def test_version_tuple(text, expected):
    from swan_offload.capability import version_tuple

    assert version_tuple(text) == expected
