"""Issue 4, shown 5: the offload device goes down and comes back (tests/lab/jobs/sim_linkdown.sh).

The kernel drops what was offloaded to the device with no XFRM notification. The agent,
told by a link event, restores the SAs in software from its own copy, asks charon to
rekey them, and offloads the successor once the device is up again.
"""

from __future__ import annotations

import re

import pytest

from .results import assert_consistent, detail, received, section_json

pytestmark = pytest.mark.lab


def test_device_down_up_restores_then_offloads_again(sim_job):
    res, sec = sim_job("sim_linkdown.sh", timeout=600)
    why = detail(res)
    before = {c["child"]: c for c in section_json(sec, "before")["children"]}
    assert (before["net"]["mode"], before["net"]["device"]) == ("packet", "wan"), why
    # while wan is down: charon's SAs are there, in software, nothing offloaded to the dead device
    down = section_json(sec, "down")
    net = next(c for c in down["children"] if c["uniqueid"] == before["net"]["uniqueid"])
    offload = {s["spi"]: s["offload"] for s in down["states"]}
    assert offload.get(net["spi_in"], "gone") is None and offload.get(net["spi_out"], "gone") is None, down
    assert down["agent_policies"] == [], down["agent_policies"]
    row = next(c for c in section_json(sec, "down_status")["children"] if c["uniqueid"] == net["uniqueid"])
    assert row["mode"] == "software" and "device wan is down" in row["reason"], row
    log = sec["log"]
    assert "device #" in log and "went down" in log, log
    assert len(re.findall(r"restored state spi 0x\w+ .* in software after device", log)) == 2, log
    assert "asked charon to rekey it" in log, log
    # after: charon rekeyed (fresh keys end the estimated sequence), the successor is in hardware
    after = section_json(sec, "after")
    assert_consistent(after, "after", why)
    (now,) = [c for c in after["children"] if c["child"] == "net"]
    assert now["uniqueid"] != net["uniqueid"], after["children"]
    assert {s["spi"]: s["offload"] for s in after["states"]} == {now["spi_in"]: "packet", now["spi_out"]: "packet"}
    st = {c["child"]: c for c in section_json(sec, "after_status")["children"]}
    assert (st["net"]["mode"], st["net"]["device"]) == ("packet", "wan"), st
    assert received(sec["ping"], 3), sec["ping"]
    # the outage is the time the device was down: traffic resumes at once when it is back,
    # and neither the rekey nor the move back into hardware costs a second gap
    out = section_json(sec, "outage")
    assert out["first_after_up"] is not None and out["first_after_up"] < 1.0, out
    assert out["longest_gap"] < out["down_seconds"] + 1.0 and out["second_gap"] < 0.5, out
    # no sequence number used twice on any SA (same key: a repeat would reuse a GCM nonce)
    for spi, w in section_json(sec, "wire").items():
        assert w["decrypted"] == w["frames"] > 0 and w["seqs"] == sorted(set(w["seqs"])), (spi, w)
    assert re.search(r"^XfrmInStateSeqError\s+0$", sec["peerstat"], re.M), sec["peerstat"]
    nokeys = section_json(sec, "nokeys")
    assert nokeys["found_in"] == ["/run/nokeys-control"], nokeys
