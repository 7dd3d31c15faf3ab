"""Run a shell script as root inside a throwaway qemu VM with the lab kernel.

The guest sees the host's root filesystem read-only (virtio 9p) with tmpfs layers on
/etc /var /tmp /root, a tmpfs /run, and the lab kernel's modules under /usr/lib/modules.
Results come back through a second, writable 9p share mounted at /run/lab ($LAB_OUT).

    from tests.lab.vm import run_job, lab_available
    res = run_job("ip -V; modprobe esp4", timeout=120)
    res.rc, res.stdout, res.stderr, res.seconds

    python -m tests.lab.vm [--systemd] SCRIPTFILE   # prints the output, exits with the job's code

With init="systemd" (--systemd) the guest boots systemd as PID 1 and runs the job as a
service once basic.target is reached (about 10 s more), for jobs that start real units.

Prepare first with tests/lab/prepare.sh. Set LAB_KEEP=1 to keep every run's folder under
.lab/runs/ (runs that fail or time out are always kept).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB = REPO / ".lab"
QEMU = "qemu-system-x86_64"
TIMEOUT_RC = 124


@dataclasses.dataclass
class JobResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    console: str = ""  # the VM's serial console (kernel + lab boot messages)
    logs: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {"gwa-charon.log": ...}
    rundir: str | None = None  # kept run folder, if any
    timed_out: bool = False


def _kernel() -> tuple[Path, Path, Path] | None:
    """(vmlinuz, initrd, kernel usr/lib) of the prepared kernel, or None."""
    try:
        env = dict(
            line.split("=", 1) for line in (LAB / "lab.env").read_text().splitlines() if "=" in line
        )
    except OSError:
        return None
    kdir = LAB / "kernel" / env.get("KVER", "?")
    vmlinuz = sorted(kdir.glob("boot/vmlinuz-*"))
    initrd = kdir / "initrd.img"
    usrlib = kdir / "usr" / "lib"
    if not vmlinuz or not initrd.is_file() or not (usrlib / "modules").is_dir():
        return None
    return vmlinuz[0], initrd, usrlib


def lab_available() -> tuple[bool, str]:
    """(True, "") when a VM can be booted; else (False, why)."""
    if shutil.which(QEMU) is None:
        return False, f"{QEMU} not found: run tests/lab/prepare.sh"
    if _kernel() is None:
        return False, f"lab kernel not prepared under {LAB}: run tests/lab/prepare.sh"
    return True, ""


def _qemu_cmd(rundir: Path, vmlinuz: Path, initrd: Path, usrlib: Path) -> list[str]:
    cmdline = f"console=ttyS0 panic=-1 quiet loglevel=4 lab.kmods={usrlib}"
    return [
        QEMU, "-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", os.environ.get("LAB_MEM_MB", "1024"),
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", cmdline,
        "-device", "virtio-rng-pci",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={rundir},mount_tag=out,security_model=none,multidevs=remap",
    ]  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_job(script: str, timeout: float = 300, env: dict | None = None, init: str = "shell") -> JobResult:
    """Boot a VM, run `script` with bash as root (cwd = repo), power off, return the result.

    `timeout` bounds the whole VM (boot included); on expiry the VM is killed and rc is 124.
    `env` adds environment variables for the script; LAB_REPO and LAB_OUT (the results
    share in the guest, /run/lab) are always set. `init`: "shell" (the job is PID 1's child)
    or "systemd" (PID 1 is systemd, the job is lab-job.service).
    """
    if init not in ("shell", "systemd"):
        raise ValueError(f"init must be shell or systemd, not {init!r}")
    ok, why = lab_available()
    if not ok:
        raise RuntimeError(why)
    vmlinuz, initrd, usrlib = _kernel()  # type: ignore[misc]
    (LAB / "runs").mkdir(parents=True, exist_ok=True)
    rundir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=LAB / "runs"))
    rundir.chmod(0o755)
    (rundir / "job.sh").write_text(script)
    shutil.copy(HERE / "guest-run.sh", rundir / "init2.sh")
    exports = {"LAB_REPO": str(REPO), "LAB_OUT": "/run/lab", "LAB_INIT": init, **(env or {})}
    (rundir / "job.env").write_text(
        "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in exports.items())
    )

    start = time.monotonic()
    timed_out = False
    with open(rundir / "console.log", "wb") as console:
        proc = subprocess.Popen(
            _qemu_cmd(rundir, vmlinuz, initrd, usrlib),
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - start

    rc_text = _read(rundir / "rc").strip()
    if timed_out:
        rc = TIMEOUT_RC
    elif rc_text.isdigit():
        rc = int(rc_text)
    else:
        rc = 255  # the guest died before the job finished: see console
    logs = {p.name: _read(p) for p in sorted((rundir / "logs").glob("*"))}
    res = JobResult(
        rc=rc, stdout=_read(rundir / "stdout"), stderr=_read(rundir / "stderr"),
        seconds=seconds, console=_read(rundir / "console.log"), logs=logs,
        rundir=str(rundir), timed_out=timed_out,
    )  # fmt: skip
    if timed_out:
        res.stderr += f"\n[lab] VM killed after {timeout:.0f} s timeout\n"
    elif not rc_text:
        res.stderr += "\n[lab] no exit code from the guest; console:\n" + res.console[-3000:]
    if rc == 0 and not os.environ.get("LAB_KEEP"):
        shutil.rmtree(rundir, ignore_errors=True)
        res.rundir = None
    return res


def main(argv: list[str]) -> int:
    init = "systemd" if "--systemd" in argv[1:] else "shell"
    argv = [a for a in argv if a != "--systemd"]
    if len(argv) != 2:
        print("usage: python -m tests.lab.vm [--systemd] SCRIPTFILE", file=sys.stderr)
        return 2
    ok, why = lab_available()
    if not ok:
        print(f"lab not available: {why}", file=sys.stderr)
        return 2
    res = run_job(Path(argv[1]).read_text(), init=init)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    kept = f", kept in {res.rundir}" if res.rundir else ""
    print(f"[lab] rc={res.rc} in {res.seconds:.1f} s{kept}", file=sys.stderr)
    return res.rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
