"""The lab's charon stand-in (tests/lab/jobs/standin.py) answers list-sas as charon would
across a rekey and its delayed delete, updating only the IKE_SA concerned (a rebuild of all
made its rekey O(N): the 10,000 bench measured the stand-in, not the agent). Its kernel is
the in-memory one here; the lab job standin_shape.sh compares its objects with charon's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from swan_offload.backend import MemoryBackend

JOB = Path(__file__).resolve().parent / "lab" / "jobs" / "standin.py"


@pytest.fixture
def standin_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("standin_job", JOB)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "standin_job", mod)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "NetlinkBackend", MemoryBackend)
    monkeypatch.setattr(mod.threading, "Timer", lambda *a: type("NoTimer", (), {"start": lambda self: None})())
    return mod


def sections(server) -> dict:
    """CHILD_SA key -> its section object: what was rebuilt shows as a new object."""
    return {k: ch for entry in server.sas for ike in entry.values() for k, ch in ike["child-sas"].items()}


def listing(server) -> dict:
    """IKE_SA name -> {CHILD_SA key: state}, as server.sas holds them for list-sas."""
    return {name: {k: ch["state"] for k, ch in ike["child-sas"].items()} for entry in server.sas for name, ike in entry.items()}


@pytest.mark.parametrize("shape", ["spokes", "many"])
def test_a_rekey_and_its_delete_change_only_their_ike_sa(standin_module, shape, tmp_path):
    s = standin_module.StandIn(str(tmp_path / "vici"), shape, 5)
    before, kept = listing(s.server), sections(s.server)
    old = s.children[3]
    assert s.rekey({"child-id": str(old.uniqueid)}) == {"success": "yes"}
    new = s.children[3]
    ike = old.ike_name
    after = listing(s.server)
    assert after[ike] == before[ike] | {f"{old.name}-{old.uniqueid}": "REKEYED", f"{new.name}-{new.uniqueid}": "INSTALLED"}
    assert {k: v for k, v in after.items() if k != ike} == {k: v for k, v in before.items() if k != ike}
    assert len(s.server.sas) == (5 if shape == "spokes" else 1)
    # the others' sections were left as they were, not rebuilt
    now = sections(s.server)
    assert all(now[k] is v for k, v in kept.items() if k != f"{old.name}-{old.uniqueid}")
    assert len(s.kernel.states) == 2 * 6  # the old SAs stay until the delayed delete
    s._delete(old)
    final = listing(s.server)
    expect = dict(before[ike])
    expect.pop(f"{old.name}-{old.uniqueid}")
    assert final[ike] == expect | {f"{new.name}-{new.uniqueid}": "INSTALLED"}
    assert {k: v for k, v in final.items() if k != ike} == {k: v for k, v in before.items() if k != ike}
    assert len(s.kernel.states) == 2 * 5
    spis = {st.spi for st in s.kernel.states.values()}
    assert {new.spi_in, new.spi_out} <= spis and not {old.spi_in, old.spi_out} & spis
