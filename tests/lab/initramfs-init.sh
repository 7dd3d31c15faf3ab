#!/bin/busybox sh
# Stage 1 (PID 1 in the initramfs): mount the host's root read-only over 9p, give it
# writable tmpfs layers, add the lab kernel's modules under /usr/lib, mount the results
# share on /run/lab and hand over to /run/lab/init2.sh (written by vm.py) on the host's sh.
# Kernel command line: lab.kmods=<host path of the unpacked kernel's usr/lib>
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "lab-init: $*"; sleep 1; poweroff -f; }

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mod/*.ko; do insmod "$m" || fail "insmod $m"; done

KMODS=$(sed -n 's/.*lab\.kmods=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host \
    || fail "cannot mount the host root"

mount -t tmpfs -o mode=0755 ovl /ovl
for d in etc var tmp root; do
    mkdir -p /ovl/$d/up /ovl/$d/work
    mount -t overlay overlay -o lowerdir=/host/$d,upperdir=/ovl/$d/up,workdir=/ovl/$d/work /host/$d \
        || fail "overlay /$d"
done
chmod 1777 /ovl/tmp/up
[ -d "/host$KMODS/modules" ] || fail "no kernel modules at $KMODS"
mount -t overlay overlay -o ro,lowerdir=/host$KMODS:/host/usr/lib /host/usr/lib || fail "overlay /usr/lib"

mount -t tmpfs -o mode=0755 run /host/run
mkdir -p /host/run/lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /host/run/lab || fail "cannot mount the out share"
for d in proc sys dev; do mount --move /$d /host/$d; done
exec switch_root /host /bin/sh /run/lab/init2.sh
