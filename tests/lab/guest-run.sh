#!/bin/sh
# Stage 2 (PID 1 on the host's userspace, inside the VM). vm.py copies this file to the
# results share as /run/lab/init2.sh next to job.sh and job.env; it runs the job as root with
# cwd = the repo, writes stdout, stderr, rc and charon logs to the share and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
OUT=/run/lab
mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts 2>/dev/null || { mkdir -p /dev/pts && mount -t devpts devpts /dev/pts; }
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
hostname lab
ip link set lo up
echo "lab: guest up after $(cut -d' ' -f1 /proc/uptime) s"

. "$OUT/job.env"       # exports LAB_REPO, LAB_OUT and the caller's env
cd "$LAB_REPO"
# setsid: the job gets its own session; a stray background process cannot hold PID 1.
setsid bash "$OUT/job.sh" >"$OUT/stdout" 2>"$OUT/stderr" </dev/null
rc=$?
echo "$rc" >"$OUT/rc.tmp" && mv "$OUT/rc.tmp" "$OUT/rc"
mkdir -p "$OUT/logs"
for f in /run/*/charon.log; do
    [ -e "$f" ] && cp "$f" "$OUT/logs/$(basename "$(dirname "$f")")-charon.log"
done
echo "lab: job rc=$rc after $(cut -d' ' -f1 /proc/uptime) s"
sync
busybox poweroff -f
