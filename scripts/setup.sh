#!/usr/bin/env bash
# Set up a new Debian 12 machine (as root) for swan-offload: host packages, the project's
# virtualenv in .venv, and the kernel lab (tests/lab/prepare.sh, cached under .lab/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt-get, network namespaces)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
PKGS="systemd python3 python3-venv gcc libc6-dev linux-libc-dev iproute2 strongswan-charon strongswan-swanctl
      libstrongswan-standard-plugins libcharon-extra-plugins"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# charon must not run as a system service next to the tests' own instances
systemctl disable --now strongswan-starter strongswan >/dev/null 2>&1 || true
# Debian's python, as a gateway runs the service with: an interpreter under /root or /home
# (pyenv's, say) is hidden from swan-offload.service by ProtectHome=, and the lab runs that unit
PY=${PYTHON:-/usr/bin/python3}
case "$(readlink -f .venv/bin/python 2>/dev/null)" in
    /root/*|/home/*) echo "setup.sh: .venv uses $(readlink -f .venv/bin/python); making it again from $PY" >&2; rm -rf .venv ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,dev]'
tests/lab/prepare.sh
tests/lab/sim/build.sh >/dev/null  # the simulated packet-offload NIC (trixie chroot, cached)
