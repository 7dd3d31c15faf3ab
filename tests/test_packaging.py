"""`pip install .` gives the swan-offload command: a wheel built from this tree holds the package
and its console script, and that script (not the checkout's editable install) runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_the_swan_offload_command(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("swan_offload-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    script = target / "bin" / "swan-offload"
    assert script.is_file() and "swan_offload.cli" in script.read_text()
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy first; its dependencies from this venv
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "usage: swan-offload" in r.stdout and "plan" in r.stdout and "status" in r.stdout, r.stdout + r.stderr
    where = subprocess.run([sys.executable, "-c", "import swan_offload.cli as m; print(m.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(target)), where
