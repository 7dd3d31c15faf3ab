#!/usr/bin/env bash
# The main job: in the kernel lab (a Debian 6.12 kernel under qemu), two gateways running
# charon 5.9.8, a tunnel between their subnets, swan-offload on gateway A, and its status.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m tests.lab.vm tests/lab/jobs/demo.sh
