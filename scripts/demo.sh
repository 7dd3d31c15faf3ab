#!/usr/bin/env bash
# The main job, in the kernel lab (a Debian 6.12 kernel under qemu, systemd as PID 1): two
# gateways running charon 5.9.8, gateway A with the shipped conf/swanctl.conf on a simulated
# packet-offload NIC (tests/lab/sim), swan-offload started by systemd from the shipped unit and
# conf/swan-offload.toml; then status, traffic, the kernel's view, metrics, a kill -9 that
# systemd recovers from, and the journal. No key material is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# the job's JSON sections are for tests/lab/test_lab_service.py; a person reads the rest
.venv/bin/python -m tests.lab.vm --systemd tests/lab/jobs/service.sh |
    awk '/^== /{skip = ($2 ~ /^(status|restarted|kernel|end)$/); next} !skip'
