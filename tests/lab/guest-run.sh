#!/bin/sh
# Stage 2 (PID 1 on the host's userspace, inside the VM). vm.py copies this file to the
# results share as /run/lab/init2.sh next to job.sh and job.env; it runs the job as root with
# cwd = the repo, writes stdout, stderr, rc and charon logs to the share and powers off.
# With LAB_INIT=systemd in job.env, PID 1 becomes systemd instead (the host's, 252 on
# Debian 12) and the job runs as lab-job.service once basic.target is reached, so jobs can
# start real units (systemctl, journald, sd_notify, sandboxing) as a gateway would.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
OUT=/run/lab
. "$OUT/job.env"       # exports LAB_REPO, LAB_OUT and the caller's env

run_job() {
    echo "lab: job starts after $(cut -d' ' -f1 /proc/uptime) s"
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
}

if [ "${1:-}" = --job ]; then  # lab-job.service under systemd
    run_job
fi

hostname lab
if [ "${LAB_INIT:-}" = systemd ]; then
    U=/etc/systemd/system
    # only what a job needs: lab.target pulls basic.target (journald, sysctl, ...) and the
    # job; the host's own services stay out, and the units below are masked
    cat >"$U/lab.target" <<'EOF'
[Unit]
Description=Kernel lab job
Requires=basic.target lab-job.service
After=basic.target
AllowIsolate=yes
EOF
    cat >"$U/lab-job.service" <<'EOF'
[Unit]
Description=Kernel lab job (job.sh)
After=basic.target
[Service]
Type=exec
ExecStart=/bin/sh /run/lab/init2.sh --job
StandardOutput=journal+console
EOF
    # tmpfiles would empty /tmp at boot (D /tmp): a walk over the host's /tmp through 9p that
    # takes minutes under TCG, and a checkout under /tmp gone for the job
    for u in systemd-tmpfiles-setup.service systemd-tmpfiles-clean.timer systemd-timesyncd.service \
             systemd-pstore.service systemd-firstboot.service systemd-repart.service; do
        ln -sf /dev/null "$U/$u"
    done
    echo "lab: guest up after $(cut -d' ' -f1 /proc/uptime) s, starting systemd"
    exec /lib/systemd/systemd --unit=lab.target --log-target=console --log-level=warning
fi

mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts 2>/dev/null || { mkdir -p /dev/pts && mount -t devpts devpts /dev/pts; }
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ip link set lo up
echo "lab: guest up after $(cut -d' ' -f1 /proc/uptime) s"
run_job
