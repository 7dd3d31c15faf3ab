#!/usr/bin/env bash
# Run every test tier: unit, host kernel (private netns), real charon (kernel-libipsec), and
# the qemu kernel lab. Sets the machine up first (idempotent), so a new machine needs nothing else.
# With arguments, they go to one pytest run (e.g. a file or -k); without, the lab's VMs run in
# two shards side by side: a VM is one emulation thread (TCG), and the machine has two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TIERS_REQUIRED=1  # setup installed every tier: a tier that cannot run fails, never skips
.venv/bin/tox -e lint,type   # ruff on the package, tests and benchmarks; mypy --strict on swan_offload/
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if [ $# -gt 0 ] || [ "$(nproc)" -lt 2 ]; then
    exec "${PYTEST[@]}" "$@" tests
fi
"${PYTEST[@]}" --ignore=tests/lab tests
# the shards, balanced by the durations of a serial run (docs/benchmarks.md, "Suite"): ~1110 s each
SHARD_A=(tests/lab/test_lab_sim.py tests/lab/test_lab_smoke.py tests/lab/test_lab_linkdown.py tests/lab/test_lab_service.py)
SHARD_B=(tests/lab/test_lab_scenarios.py tests/lab/test_lab_agent.py tests/lab/test_lab_metrics.py tests/lab/test_lab_scale.py)
covered=$(printf '%s\n' "${SHARD_A[@]}" "${SHARD_B[@]}" | sort)
present=$(ls tests/lab/test_*.py | sort)
if [ "$covered" != "$present" ]; then
    echo "scripts/test.sh: the lab shards do not name every tests/lab/test_*.py:" >&2
    diff <(echo "$covered") <(echo "$present") >&2 || true
    exit 1
fi
logs=$(mktemp -d)
"${PYTEST[@]}" "${SHARD_A[@]}" >"$logs/a" 2>&1 &
a=$!
"${PYTEST[@]}" "${SHARD_B[@]}" >"$logs/b" 2>&1 &
b=$!
rc=0
wait $a || rc=1
wait $b || rc=1
for s in a b; do echo "== lab shard $s"; cat "$logs/$s"; done
rm -rf "$logs"
exit $rc
