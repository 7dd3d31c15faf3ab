"""Fixtures for the kernel lab tier (pytest -m lab). Prepare with tests/lab/prepare.sh."""

import pytest
from helpers import skip_unless_required

from .vm import lab_available, run_job


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
