"""The daemon and `plan` against real charon 5.9.8 (kernel-libipsec on this ESP-less host).

charon's events, SPIs, reqids and rekeys are real; its SAs live in userspace, so
the kernel holds none and every CHILD_SA must be reported as pending (not lost,
not invented). State installs on a real ESP kernel are proven in tests/lab.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import skip_unless_required, wait_for
from support.charon_host import SWANCTL_SECRETS, CharonPair, charon_available
from support.vici_client import session as vici_session
from support.vici_server import encode_message

from swan_offload import config
from swan_offload.cli import main
from swan_offload.daemon import Daemon

pytestmark = [pytest.mark.charon, pytest.mark.netns]


@contextmanager
def running(pair, tmp_path, resync_seconds: float) -> Iterator[Daemon]:
    """The daemon on gateway a's charon, connected, stopped afterwards."""
    # idle resyncs every resync_seconds however long they take (share 1): part of these tests' rig
    cfg = config.Config(vici_socket=pair.vici_path("a"), status_file=str(tmp_path / "s.json"), resync_seconds=resync_seconds, resync_share=1.0)
    d = Daemon(cfg, netns=pair.ns["a"])
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: d.connected)
        yield d
    finally:
        d.stop()
        t.join(5)


@pytest.fixture
def pair():
    ok, why = charon_available()
    if not ok:
        skip_unless_required(why)
    with CharonPair() as p:
        yield p


def test_daemon_follows_real_charon(pair, tmp_path):
    with running(pair, tmp_path, 0.5) as d:
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


def _hub_conf(side: str, n: int, start: bool) -> str:
    """One IKE_SA ``hub`` with CHILD_SAs c1..cn, each to its own UDP port (a swanctl.conf
    template, see render()); ``start``: side a brings them all up when it loads."""
    mine, theirs = ("10.10.1.0/24[udp]", "10.10.2.0/24[udp/{port}]") if side == "a" else ("10.10.2.0/24[udp/{port}]", "10.10.1.0/24[udp]")
    kids = "".join(
        f"            c{i} {{\n                local_ts = {mine.format(port=5000 + i)}\n                remote_ts = {theirs.format(port=5000 + i)}\n"
        f"                esp_proposals = aes128gcm16\n{'                start_action = start' + chr(10) if start else ''}            }}\n"
        for i in range(1, n + 1)
    )
    head = "connections {\n    hub {\n        local_addrs = $local_v4\n        remote_addrs = $remote_v4\n        proposals = aes128-sha256-ecp256\n"
    head += "        local { auth = psk\n            id = hub-$side.test }\n        remote { auth = psk\n            id = hub-$peer.test }\n        children {\n"
    return head + kids + "        }\n    }\n}\n" + SWANCTL_SECRETS


def test_real_charon_cannot_list_a_hub_ike_sa_whole_and_the_agent_loses_none_of_it(tmp_path, capsys):
    """charon 5.9.8 itself, 1,600 CHILD_SAs under one IKE_SA: its list-sa message would pass
    VICI's 512 KiB limit, so charon discards it (vici_socket.c) and a full list-sas lists
    nothing of the hub (measured: 1,400 of them listed in 513,759 bytes, just under). The
    agent, told of each CHILD_SA by its event, keeps all 1,600
    through full resyncs, reading them one by one, and says why in its status."""
    ok, why = charon_available()
    if not ok:
        skip_unless_required(why)
    n = 1600
    with CharonPair(conf_a=_hub_conf("a", n, False), conf_b=_hub_conf("b", n, False)) as pair:
        with running(pair, tmp_path, 5.0) as d:
            pair.load(_hub_conf("a", n, True), _hub_conf("b", n, False))  # side a starts all of them
            sess = vici_session(pair.vici_path("a"), 30)
            wait_for(lambda: _installed(sess, n) == n, timeout=300, what=f"{n} CHILD_SAs up")
            assert int(sess.stats()["ikesas"]["total"]) == 1
            # real charon: the whole listing is discarded, one CHILD_SA of it is not
            assert list(sess.list_sas()) == []
            one = next(iter(sess.list_sas({"ike": "hub", "child": "c7"})))
            none = next(iter(sess.list_sas({"ike": "hub", "child": "swan-offload roster"})))
            per_child = len(encode_message(one)) - len(encode_message(none))
            with capsys.disabled():
                print(f"\n  charon 5.9.8 lists a CHILD_SA of this hub in {per_child} bytes: {512 * 1024 // per_child} fit in 512 KiB")
            assert per_child * n > 512 * 1024
            # a full resync since the hub outgrew one message says so (the run count alone
            # cannot tell: event-scoped reconciles count too)
            wait_for(lambda: any("512 KiB" in w and "hub" in w for w in d.status()["agent"]["vici_unreadable"]), timeout=120, what="a full resync that paged the hub")
            runs = d.reconciler.stats().runs
            wait_for(lambda: len(d.ledger.outcomes) == n and d.reconciler.stats().runs >= runs + 2, timeout=120, what="all known, two more reconciles")
            assert len(d.ledger.outcomes) == n and {o.child for o in d.ledger.outcomes.values()} == {f"c{i}" for i in range(1, n + 1)}
            unreadable = d.status()["agent"]["vici_unreadable"]
            assert any("512 KiB" in w and "hub" in w for w in unreadable), unreadable


def _installed(sess, n: int) -> int:
    """CHILD_SAs of the hub charon has INSTALLED, asked one name at a time (the whole
    listing is what charon discards)."""
    states = [ch.get("state") for i in range(1, n + 1) for m in sess.list_sas({"ike": "hub", "child": f"c{i}"}) for ch in m["hub"]["child-sas"].values()]
    return states.count(b"INSTALLED")
