"""VICI messages -> CHILD_SA model, on charon 5.9.8's real events (tests/data) and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swan_offload.model import MalformedMessage, SaList, children_of, ikes_of, rekeyed_children

EVENTS = json.loads((Path(__file__).parent / "data" / "charon-5.9.8-events.json").read_text())


def by_event(name):
    return [e["message"] for e in EVENTS if e["event"] == name]


def test_real_child_updown_and_list_sa_parse():
    ups = [m for m in by_event("child-updown") if m.get("up") == "yes"]
    assert ups
    for msg in ups + by_event("list-sa"):
        for ch in children_of(msg):
            assert ch.reqid > 0 and ch.spi_in and ch.spi_out and ch.local_ts and ch.remote_ts
            assert ch.encap  # kernel-libipsec always encapsulates
    families = {ch.local_ts[0].family for m in ups for ch in children_of(m)}
    assert families == {4, 6}


def test_real_child_rekey_pairs_share_reqid():
    pairs = [p for m in by_event("child-rekey") for p in rekeyed_children(m)]
    assert pairs
    for old, new in pairs:
        assert old is not None and old.reqid == new.reqid and old.spi_in != new.spi_in and old.uniqueid != new.uniqueid


def test_real_ike_events_parse():
    for name in ("ike-updown", "ike-rekey"):
        for msg in by_event(name):
            assert all(i.uniqueid > 0 and i.local_host for i in ikes_of(msg))


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c.update({"spi-in": "zz"}), "spi-in: not a number"),
        (lambda c: c.pop("uniqueid"), "missing uniqueid"),
        (lambda c: c.update({"local-ts": "10.0.0.0/8"}), "local-ts: expected a list"),
    ],
)
def test_malformed_child_names_the_field(mutate, needle):
    msg = json.loads(json.dumps(next(m for m in by_event("list-sa") if any(v.get("child-sas") for v in m.values()))))
    ike = next(v for v in msg.values() if v.get("child-sas"))
    mutate(next(iter(ike["child-sas"].values())))
    with pytest.raises(MalformedMessage, match=needle):
        children_of(msg)


def _list_sa_with_children():
    return json.loads(json.dumps(next(m for m in by_event("list-sa") if any(v.get("child-sas") for v in m.values()))))


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda ike: next(iter(ike["child-sas"].values())).update({"spi-in": "zz"}), "spi-in: not a number"),
        (lambda ike: ike.update({"local-host": "gateway-a"}), "local-host: not an IP address"),
        (lambda ike: ike.update({"child-sas": ["x"]}), "child-sas: expected a section"),
    ],
)
def test_an_unreadable_ike_entry_is_named_with_its_reqids_not_dropped(mutate, needle):
    """list-sas: an entry that does not parse is unreadable (kept as it is), never absent."""
    good, bad = _list_sa_with_children(), _list_sa_with_children()
    (name,) = bad
    reqids = {int(c["reqid"]) for c in bad[name]["child-sas"].values()}
    mutate(bad[name])
    sas = SaList()
    sas.add(good)
    sas.add({"other": {"uniqueid": "9", "local-host": "192.0.2.1", "remote-host": "192.0.2.7"}})  # readable, no children
    sas.add(bad)
    assert [e for e in sas.errors if needle in e] == sas.errors and len(sas.errors) == 1, sas.errors
    assert not sas.complete and sas.unnamed == 0
    (key,) = sas.unreadable
    assert key == (name, int(bad[name]["uniqueid"]))
    if isinstance(bad[name]["child-sas"], dict):
        assert sas.unreadable[key] == reqids
    assert len(sas.children) == len(children_of(good)) and len(sas.ikes) == 2


def test_an_entry_that_names_no_ike_sa_freezes_everything():
    sas = SaList()
    sas.add(["not", "a", "section"])
    sas.add({"x": "not a section"})
    assert sas.unnamed == 1 and ("x", None) in sas.unreadable and len(sas.errors) == 2 and not sas.complete
