#!/bin/bash
# Prepare the kernel lab: host packages, iproute2 from bookworm-backports, a Debian 6.12
# kernel from trixie (unpacked + depmod) and a busybox initramfs. Idempotent; everything
# downloaded or built lives under <repo>/.lab/. Never touches the machine's apt sources.
#
#   tests/lab/prepare.sh            # use the cache when present
#   LAB_REFRESH=1 tests/lab/prepare.sh   # re-read the package lists, take a newer kernel
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LAB=$REPO/.lab
APTDIR=$LAB/apt
HOST_PKGS="qemu-system-x86 busybox-static kmod cpio xz-utils debootstrap strongswan-charon strongswan-swanctl libstrongswan-standard-plugins prometheus"
KMODS="netfs 9pnet 9pnet_virtio 9p overlay"

log() { echo "prepare: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { log "must run as root (apt-get install, depmod)"; exit 1; }
mkdir -p "$APTDIR"

# --- private apt configurations -------------------------------------------------------
# Same mirror as the machine's own apt (URIs: of debian.sources, or a classic sources.list).
HOST_SOURCES=/etc/apt/sources.list.d/debian.sources
host_uris() {
    { sed -n 's/^URIs:[[:space:]]*//p' "$HOST_SOURCES" 2>/dev/null
      grep -hs '^deb ' /etc/apt/sources.list | grep -o 'https\?://[^ ]*'; } | tr ' ' '\n' | grep .
}
MIRROR=$(host_uris | grep -v security | head -n1 || true)
SECURITY=$(host_uris | grep security | head -n1 || true)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

stanza() { # URI SUITES...
    local uri=$1; shift
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n\n' "$uri" "$*" "$KEYRING"
}
# trixie: only for downloading the kernel. bookworm: the host's suites + bookworm-backports,
# for installing on the host (iproute2's dependencies come from bookworm itself).
stanza "$MIRROR" trixie >"$APTDIR/trixie.sources"
{ stanza "$MIRROR" bookworm bookworm-updates bookworm-backports
  [ -z "$SECURITY" ] || stanza "$SECURITY" bookworm-security; } >"$APTDIR/bookworm.sources"

apt_private() { # NAME apt-command args...  (NAME = trixie | bookworm)
    local name=$1 cmd=$2; shift 2
    mkdir -p "$APTDIR/$name/lists/partial" "$APTDIR/cache/archives/partial"
    "$cmd" -q -o Dir::Etc::sourcelist="$APTDIR/$name.sources" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$APTDIR/$name/lists" -o Dir::Cache="$APTDIR/cache" \
        -o Dir::Cache::pkgcache="$APTDIR/$name/pkgcache.bin" -o Dir::Cache::srcpkgcache= \
        -o APT::Get::List-Cleanup=false -o APT::Sandbox::User=root "$@"
}
apt_update() { # NAME: once per sources content, or again with LAB_REFRESH=1
    local stamp=$APTDIR/$1/updated want
    want=$(sha256sum <"$APTDIR/$1.sources")
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ "${LAB_REFRESH:-0}" = 1 ]; then
        log "apt-get update ($1)"
        apt_private "$1" apt-get update >/dev/null
        echo "$want" >"$stamp"
    fi
}

# --- host packages ----------------------------------------------------------------------
missing=""
for p in $HOST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt_update bookworm
    log "installing:$missing"
    apt_private bookworm apt-get install -y --no-install-recommends $missing >/dev/null
fi
# iproute2 >= 6.15 (bookworm's 6.1 does not print "offload packet")
ipver=$(dpkg-query -W -f='${Version}' iproute2 2>/dev/null || true)
if [ -z "$ipver" ] || dpkg --compare-versions "$ipver" lt 6.15; then
    apt_update bookworm
    log "installing iproute2 from bookworm-backports (had: ${ipver:-none})"
    apt_private bookworm apt-get install -y --no-install-recommends -t bookworm-backports iproute2 >/dev/null
fi
if ls "$APTDIR"/cache/archives/*.deb >/dev/null 2>&1; then
    apt_private bookworm apt-get clean
fi

# --- kernel --------------------------------------------------------------------------------
current_kver() { [ -e "$LAB/lab.env" ] && sed -n 's/^KVER=//p' "$LAB/lab.env"; }
KVER=$(current_kver || true)
if [ -z "$KVER" ] || [ ! -e "$LAB/kernel/$KVER/.unpacked" ] || [ "${LAB_REFRESH:-0}" = 1 ]; then
    apt_update trixie
    pkg=$(apt_private trixie apt-cache pkgnames linux-image-6.12. \
        | grep -E '^linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned$' | sort -V | tail -n1)
    [ -n "$pkg" ] || { log "no linux-image-6.12.*+deb13-amd64-unsigned in trixie"; exit 1; }
    KVER=${pkg#linux-image-}; KVER=${KVER%-unsigned}
    KDIR=$LAB/kernel/$KVER
    if [ ! -e "$KDIR/.unpacked" ]; then
        log "downloading $pkg"
        mkdir -p "$LAB/debs"
        (cd "$LAB/debs" && apt_private trixie apt-get download "$pkg" >/dev/null)
        rm -rf "$KDIR" && mkdir -p "$KDIR"
        dpkg -x "$(ls -t "$LAB"/debs/"${pkg}"_*.deb | head -n1)" "$KDIR"
        touch "$KDIR/.unpacked"
        rm -f "$LAB"/debs/"${pkg}"_*.deb
    fi
fi
KDIR=$LAB/kernel/$KVER
MODDIR=$KDIR/usr/lib/modules/$KVER
[ -d "$MODDIR" ] || { log "no modules in $MODDIR"; exit 1; }
[ -e "$MODDIR/modules.dep" ] || { log "depmod $KVER"; depmod -b "$KDIR/usr" "$KVER"; }

# --- initramfs: busybox + the 9p/overlay modules + tests/lab/initramfs-init.sh ---------------
INITRD=$KDIR/initrd.img
want=$( { echo "$KVER"; sha256sum /bin/busybox "$HERE/initramfs-init.sh" "$0"; } | sha256sum | cut -c1-16)
if [ "$(cat "$INITRD.stamp" 2>/dev/null)" != "$want" ] || [ ! -e "$INITRD" ]; then
    log "building initramfs"
    tmp=$(mktemp -d "$LAB/initramfs.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/bin" "$tmp/mod" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/host" "$tmp/ovl"
    cp /bin/busybox "$tmp/bin/busybox"
    install -m 0755 "$HERE/initramfs-init.sh" "$tmp/init"
    # dependency order from modules.dep; busybox insmod needs uncompressed files
    n=0
    for f in $(for m in $KMODS; do modprobe -d "$KDIR/usr" -S "$KVER" --show-depends "$m"; done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++'); do
        n=$((n + 1)); out=$tmp/mod/$(printf %02d $n)-$(basename "${f%.xz}")
        out=${out%.zst}
        case $f in
            *.xz) xz -dc "$f" >"$out" ;;
            *.zst) zstd -qdc "$f" >"$out" ;;
            *) cp "$f" "$out" ;;
        esac
    done
    (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    echo "$want" >"$INITRD.stamp"
fi

VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -n1)
printf 'KVER=%s\nKDIR=%s\nVMLINUZ=%s\nINITRD=%s\n' "$KVER" "$KDIR" "$VMLINUZ" "$INITRD" >"$LAB/lab.env.tmp"
mv "$LAB/lab.env.tmp" "$LAB/lab.env"
log "ready: kernel $KVER, $(ip -V)"
