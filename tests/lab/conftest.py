"""Fixtures for the kernel lab tier (pytest -m lab). Prepare with tests/lab/prepare.sh."""

from pathlib import Path

import pytest
from helpers import skip_unless_required

from .results import detail, sections
from .vm import LAB, lab_available, run_job

JOBS = Path(__file__).parent / "jobs"


def pytest_configure(config):
    # Registered here too, so the marker works before/without the project's pyproject entry.
    config.addinivalue_line("markers", "lab: boots the qemu kernel lab (tests/lab/prepare.sh)")


@pytest.fixture(scope="session")
def lab_run_job():
    """vm.run_job, or skip with the reason when qemu or the prepared kernel is missing."""
    ok, why = lab_available()
    if not ok:
        skip_unless_required(why)
    return run_job


@pytest.fixture
def lab_job(lab_run_job):
    """Run jobs/NAME in the VM, assert it exited 0, return (result, its sections)."""

    def run(name: str, timeout: float, env: dict | None = None, init: str = "shell"):
        res = lab_run_job((JOBS / name).read_text(), timeout=timeout, env=env, init=init)
        assert res.rc == 0, detail(res)
        return res, sections(res.stdout)

    return run


@pytest.fixture
def sim_job(lab_job):
    """lab_job for jobs that load swsim.ko; skip (or fail under TIERS_REQUIRED) if it is not built."""
    if not list((LAB / "sim").glob("*/swsim.ko")):
        skip_unless_required("swsim.ko not built: tests/lab/sim/build.sh")
    return lab_job
