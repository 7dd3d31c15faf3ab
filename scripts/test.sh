#!/usr/bin/env bash
# Run every test tier: unit, host kernel (private netns), real charon (kernel-libipsec), and
# the qemu kernel lab. Sets the machine up first (idempotent), so a new machine needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TIERS_REQUIRED=1  # setup installed every tier: a tier that cannot run fails, never skips
.venv/bin/tox -e lint,type   # ruff on the package, tests and benchmarks; mypy --strict on swan_offload/
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
