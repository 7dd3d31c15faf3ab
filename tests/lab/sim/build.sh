#!/bin/bash
# Build the simulated packet-offload NIC (swsim.ko) for the lab kernel.
#
# trixie's gcc-14 and kbuild need glibc 2.38, so the module is built in a Debian trixie
# chroot (debootstrap minbase + gcc + linux-headers-$KVER), cached under .lab/chroot-trixie.
# The module is rebuilt when its sources change: .lab/sim/$KVER/swsim.ko. Idempotent, root.
#
#   tests/lab/sim/build.sh            # prints the path of swsim.ko
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
LAB=$REPO/.lab
ROOT=$LAB/chroot-trixie
log() { echo "sim-build: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, chroot)"; exit 1; }
[ -e "$LAB/lab.env" ] || { log "run tests/lab/prepare.sh first"; exit 1; }
KVER=$(sed -n 's/^KVER=//p' "$LAB/lab.env")
MIRROR=$(sed -n 's/^URIs:[[:space:]]*//p' "$LAB/apt/trixie.sources" | head -n1)
OUT=$LAB/sim/$KVER
# strongswan: native 6.0.1 (hw_offload = packet) for the side-by-side in docs/
CHROOT_PKGS="gcc-14 make libelf-dev pahole linux-headers-$KVER strongswan-charon strongswan-swanctl libstrongswan-standard-plugins netbase"

# --- the chroot: debootstrap once, then the build packages (kept in the stamp) -------------
if [ ! -e "$ROOT/.debootstrapped" ]; then
    log "debootstrap trixie into $ROOT (from $MIRROR)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$LAB/debootstrap.log" 2>&1 ||
        { tail -n 20 "$LAB/debootstrap.log" >&2; exit 1; }
    touch "$ROOT/.debootstrapped"
fi
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
if [ "$(cat "$ROOT/.pkgs" 2>/dev/null)" != "$CHROOT_PKGS" ]; then
    log "installing into the chroot: $CHROOT_PKGS"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    in_root apt-get -q update >/dev/null
    in_root apt-get -q install -y --no-install-recommends -o Dpkg::Options::=--force-confdef $CHROOT_PKGS >"$LAB/chroot-apt.log" 2>&1 ||
        { tail -n 20 "$LAB/chroot-apt.log" >&2; log "(is linux-headers-$KVER still on the mirror? LAB_REFRESH=1 tests/lab/prepare.sh)"; exit 1; }
    in_root apt-get clean
    echo "$CHROOT_PKGS" >"$ROOT/.pkgs"
fi

# --- the module: rebuilt when a source changes ------------------------------------------------
want=$(cat "$HERE"/Makefile "$HERE"/*.c "$HERE"/*.h 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$OUT/swsim.stamp" 2>/dev/null)" != "$want" ] || [ ! -e "$OUT/swsim.ko" ]; then
    log "building swsim.ko for $KVER"
    rm -rf "$ROOT/build" && mkdir -p "$ROOT/build" "$OUT"
    cp "$HERE"/Makefile "$HERE"/*.c "$ROOT/build/"
    cp "$HERE"/*.h "$ROOT/build/" 2>/dev/null || true
    in_root make -C "/usr/src/linux-headers-$KVER" M=/build CC=gcc-14 modules >"$OUT/build.log" 2>&1 ||
        { cat "$OUT/build.log" >&2; exit 1; }
    cp "$ROOT/build/swsim.ko" "$OUT/swsim.ko"
    echo "$want" >"$OUT/swsim.stamp"
fi
echo "$OUT/swsim.ko"
