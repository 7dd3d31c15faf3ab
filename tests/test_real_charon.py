"""The daemon and `plan` against real charon 5.9.8 (kernel-libipsec on this ESP-less host).

charon's events, SPIs, reqids and rekeys are real; its SAs live in userspace, so
the kernel holds none and every CHILD_SA must be reported as pending (not lost,
not invented). State installs on a real ESP kernel are proven in tests/lab.
"""

from __future__ import annotations

import json
import threading

import pytest
from helpers import skip_unless_required, wait_for
from support.charon_host import CharonPair, charon_available

from swan_offload import config
from swan_offload.cli import main
from swan_offload.daemon import Daemon

pytestmark = [pytest.mark.charon, pytest.mark.netns]


@pytest.fixture
def pair():
    ok, why = charon_available()
    if not ok:
        skip_unless_required(why)
    with CharonPair() as p:
        yield p


def test_daemon_follows_real_charon(pair, tmp_path):
    cfg = config.Config(vici_socket=pair.vici_path("a"), status_file=str(tmp_path / "s.json"), resync_seconds=0.5)
    d = Daemon(cfg, netns=pair.ns["a"])
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: d.connected)
        assert d.charon_version == "charon 5.9.8"
        pair.initiate("net4", "gw")
        rows = wait_for(lambda: [o for o in d.reconciler.outcomes.values() if o.child == "net4"])
        (row,) = rows
        assert row.reqid > 0 and row.spi_in and row.spi_out
        assert row.mode == "pending" and "not (yet) in the kernel" in row.reason
        old_spi = row.spi_in
        pair.swanctl("a", "--rekey", "--child", "net4")
        wait_for(lambda: any(o.child == "net4" and o.spi_in != old_spi for o in d.reconciler.outcomes.values()))
        pair.swanctl("a", "--terminate", "--ike", "gw")
        wait_for(lambda: not d.reconciler.outcomes, timeout=20)
        # nothing of the agent's in the kernel: it never invented objects
        from swan_offload.backend import NetlinkBackend

        b = NetlinkBackend(pair.ns["a"])
        assert b.dump_states() == [] and [p for p in b.dump_policies() if p.sel.user] == []
    finally:
        d.stop()
        t.join(5)
    status = json.loads((tmp_path / "s.json").read_text())
    assert status["agent"]["charon"] == "charon 5.9.8"


def test_plan_against_real_charon(pair, tmp_path, capsys):
    pair.initiate("net4", "gw")
    cfgfile = tmp_path / "c.toml"
    cfgfile.write_text(f'[vici]\nsocket = "{pair.vici_path("a")}"\n')
    assert main(["-c", str(cfgfile), "--netns", pair.ns["a"], "plan", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (ch,) = [c for c in out["children"] if c["child"] == "net4"]
    assert ch["target"] == "pending" and ch["reqid"] > 0 and not ch["states"] and not ch["policies"]
    assert out["kernel"]
