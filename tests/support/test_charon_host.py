"""Real charon pairs come up, raise VICI events, and clean up after themselves."""

import json
import os
import subprocess

import pytest
import vici_client
from charon_host import SWANCTL_CONF, CharonPair, charon_available
from vici_client import text

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "charon-5.9.8-events.json")
available, reason = charon_available()


def needs_charon(test):
    return pytest.mark.charon(pytest.mark.skipif(not available, reason=reason)(test))


def session(path):
    return vici_client.session(path, timeout=10)


def netns_names():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def next_event(events, name):
    """The next `name` event; fails if none arrives within ~10 s."""
    for _ in range(100):
        label, message = next(events)
        if label is not None and label.decode() == name:
            return text(message)
    pytest.fail(f"no {name} event")


@pytest.fixture(scope="module")
def pair():
    with CharonPair() as p:
        yield p


@needs_charon
def test_child_comes_up_with_child_updown_on_a(pair):
    events = session(pair.vici_path("a")).listen(["child-updown"], timeout=0.1)
    assert next(events) == (None, None)         # registered
    pair.initiate("net4", "gw")
    message = next_event(events, "child-updown")
    events.close()
    assert message["up"] == "yes"
    (child,) = message["gw"]["child-sas"].values()
    assert child["name"] == "net4" and child["state"] == "INSTALLED"
    assert child["encap"] == "yes" and child["encr-alg"] == "AES_GCM_16"
    assert child["local-ts"] == ["10.10.1.0/24"] and child["remote-ts"] == ["10.10.2.0/24"]
    listed = {name: ike for sa in session(pair.vici_path("b")).list_sas()
              for name, ike in text(sa).items()}
    (peer_child,) = listed["gw"]["child-sas"].values()
    assert peer_child["spi-in"] == child["spi-out"]


@needs_charon
def test_ipv6_child_in_the_same_ike_sa(pair):
    pair.initiate("net6", "gw")
    (sa,) = session(pair.vici_path("a")).list_sas({"ike": "gw"})
    children = {c["name"]: c for c in text(sa)["gw"]["child-sas"].values()}
    assert children["net6"]["local-ts"] == ["fd00:1::/64"]
    assert children["net6"]["state"] == "INSTALLED"


@needs_charon
def test_restart_reloads_config(pair):
    pair.stop("a")
    with pytest.raises(ConnectionRefusedError):    # charon leaves its socket file
        session(pair.vici_path("a"))
    pair.start("a")
    assert text(session(pair.vici_path("a")).version())["version"] == "5.9.8"
    conns = pair.swanctl("a", "--list-conns").stdout
    assert "gw:" in conns and "gw6:" in conns
    pair.initiate("host", "host")


@needs_charon
def test_cleanup_even_when_setup_fails():
    broken = CharonPair("connections { gw { children { x { local_ts = bogus } } } }")
    with pytest.raises(RuntimeError):
        broken.__enter__()
    names = netns_names()
    assert broken.ns["a"] not in names and broken.ns["b"] not in names
    assert not os.path.exists(broken.dir)


@needs_charon
def test_pairs_run_in_parallel_and_clean_up():
    with CharonPair(SWANCTL_CONF) as one, CharonPair() as two:
        assert one.ns != two.ns
        one.initiate("net4", "gw")
        two.initiate("net4", "gw")
    names = netns_names()
    for p in (one, two):
        assert all(ns not in names for ns in p.ns.values())
        assert not os.path.exists(p.dir)


def test_captured_events_file():
    """The recording is str-only and shaped like VICI messages."""
    with open(DATA) as f:
        records = json.load(f)

    def check(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and check(v) for k, v in value.items())
        if isinstance(value, list):
            return all(isinstance(v, str) for v in value)
        return isinstance(value, str)

    names = {r["event"] for r in records}
    assert {"ike-updown", "child-updown", "child-rekey", "ike-rekey", "list-sa"} <= names
    assert all(isinstance(r["message"], dict) and check(r["message"]) for r in records)
