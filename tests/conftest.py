"""Shared fixtures: a private network namespace on the host kernel."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid

import pytest
from helpers import skip_unless_required


def _netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    return None


@pytest.fixture
def netns():
    """Name of a fresh network namespace, deleted afterwards (its XFRM objects go with it)."""
    why = _netns_reason()
    if why:
        skip_unless_required(why)
    name = f"swoff-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(autouse=True)
def _agent_log_handler_goes_with_its_test():
    """cli.main installs the agent's stderr handler on the root logger; pytest closes that
    test's stderr afterwards, and a later test's threads would log into the closed file."""
    yield
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "swan-offload"]
