"""Issue 13's benchmark at small N, so it keeps working (bench/scale.py, jobs/scale.sh).

Its figures are printed, not asserted (the lab is emulated); what is asserted are counts:
everything offloaded, no kernel write on a restart with everything offloaded, nothing
missing after a device flap, traffic on every CHILD_SA.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for bench/ (plain `pytest` leaves it out)
from bench import scale  # noqa: E402
from tests.lab.results import detail, section_json  # noqa: E402

pytestmark = pytest.mark.lab


def test_scale_bench_at_ten(lab_run_job):
    fig = scale.measure(10)
    print(json.dumps(fig))
    assert fig["floor_errors"] == 0 == fig["restore_floor_errors"] and fig["promote_s"] is not None and fig["restart_s"] is not None, fig
    assert fig["restart_writes"] == 0 and fig["restore_missing"] == 0 and fig["reoffload_s"] is not None, fig
    assert fig["event_s"]["lost"] == 0 and fig["final_missing"] == fig["final_orphans"] == 0, fig
    assert fig["udp_children_ok"] == 10, fig
    # across the flap: the status never kept saying packet, the hardware carried traffic
    # before it, and no SA put a sequence number on the wire twice (the restored copies'
    # estimates), every frame opened with the keys of the SAs charon negotiated
    assert fig["restore_status_packet"] == 0 and fig["flap_children"] == 10, fig
    assert fig["wire_device_frames"] > 0 and fig["wire_repeats"] == 0 == fig["wire_undecrypted"], fig


def test_the_charon_stand_in_installs_what_charon_installs(lab_job):
    """jobs/standin_shape.sh: N=10 CHILD_SAs by real charon 5.9.8, then by the stand-in the
    bench uses past what charon negotiates under TCG; their kernel objects, with what differs
    per SA taken out (SPIs, keys, reqid numbers, counters), are the same, and both list alike."""
    res, sec = lab_job("standin_shape.sh", timeout=600)
    why = detail(res)
    charon, standin = section_json(sec, "charon"), section_json(sec, "standin")
    assert len(charon["states"]) == 20 and len(charon["policies"]) == 38, why  # 30 + charon's 8 IKE socket bypasses
    assert standin == charon, why
    assert section_json(sec, "standin_list") == section_json(sec, "charon_list") == {"ikes": 1, "children": 10, "errors": []}


def test_scale_bench_on_the_stand_in_at_ten(lab_run_job):
    fig = scale.measure(10, "spokes")
    print(json.dumps(fig))
    assert fig["floor_errors"] == 0 == fig["restore_floor_errors"] and fig["promote_s"] is not None and fig["restart_s"] is not None, fig
    assert fig["restart_writes"] == 0 and fig["restore_missing"] == 0 and fig["reoffload_s"] is not None, fig
    assert fig["event_s"]["lost"] == 0 and fig["final_missing"] == fig["final_orphans"] == 0, fig
