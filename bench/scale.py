"""Hub scale in the lab (issue 13): N CHILD_SAs on swsim with real charon, one JSON object per N.

    .venv/bin/python -m bench.scale --n 10,100,300 [--json]
    .venv/bin/python -m bench.scale --n 1000,10000 --standin spokes [--json]

Each N boots the kernel lab (tests/lab) and runs tests/lab/jobs/scale.sh: N CHILD_SAs under
one IKE_SA between two charon 5.9.8, the agent on gateway A. With --standin, N beyond what
charon negotiates under TCG: tests/lab/jobs/standin.py installs charon 5.9.8's kernel objects
and serves its VICI (no IKE, no peer, so no traffic figures); "spokes" is N IKE_SAs with a
CHILD_SA each, "many" one IKE_SA (past ~1,300 CHILD_SAs charon cannot list it whole: the
agent then knows only what events name). Figures (seconds unless named):

  floor_s     one dump + the agent's DELSA/NEWSA/NEWPOLICY messages in socket-sized batches, no logic
  promote_s   agent start on software SAs -> all N in packet offload
  idle_cpu_pct, rss_mb   the settled agent over 10 s
  scrape_s    one Prometheus scrape;  dump_s   one state dump (2N SAs)
  read_s      one state dump + one policy dump + one full list-sas (dump_policies_s, listsas_s):
              what a restart reads at least; restart_over_read is the issue's restart ratio
  event_s     one CHILD_SA rekeyed at N -> its successor's SAs offloaded in the kernel (median,
              max of 3); event_status_s -> the status file shows it (it is written at most
              every second, or at 2 % of a core: at a large N it lags)
  restart_s, restart_writes   agent restart with all offloaded -> all decided; kernel writes meanwhile
  restore_s, restore_missing  wan down -> every SA back in the kernel (software), seen on the
              kernel's NEWSA notifications; missing after 60 s (one dump)
  restore_floor_s  every SA added back in one apply() (socket-sized datagrams), no logic: what
              the kernel itself takes for a restore; restore_over_floor the ratio
  restore_status_s  wan down -> the status file says packet for none (restore_status_packet: how
              many it still said when the probe gave up, else 0)
  reoffload_s wan up -> all N in packet offload again (charon rekeys the restored ones)
  flap_lost, wire_*  real charon only: UDP on 20 sampled children across the flap (400 each),
              ESP on gwb's wire decrypted independently: wire_repeats (sequence numbers sent
              twice under one key) must be 0, see flap_figures

With --profile each agent start runs under tests/lab/jobs/sampler.py (its stacks every 10 ms,
by 5 s window), kept beside the run as ...-sampler-K.txt.

Ratios that matter are printed too: promote/floor, restart/read. Each run's output and the agent's log are
kept under .lab/bench/ (scale-N-<time>.out, ...-agent.log), to trace a figure afterwards. The lab is emulated (TCG): absolute
times are inflated, counts are exact. docs/benchmarks.md has the figures and their history.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEEP = ROOT / ".lab" / "bench"  # ignored, like the rest of .lab
sys.path.insert(0, str(ROOT))

from tests.lab.results import detail, section_json, sections  # noqa: E402
from tests.lab.vm import lab_available, run_job  # noqa: E402


def measure(n: int, standin: str | None = None, profile: bool = False) -> dict[str, object]:
    """One run at N: real charon (jobs/scale.sh), or the stand-in in ``standin``'s shape
    (jobs/scale_standin.sh: "spokes" or "many"), with memory for the kernel's 5N objects."""
    script = (ROOT / "tests/lab/jobs" / ("scale_standin.sh" if standin else "scale.sh")).read_text()
    env = {"LAB_SCALE_N": str(n), "LAB_SIM_ARGS": f"max_sa={max(1024, 4 * n + 16)}", "LAB_SCALE_SHAPE": standin or "", "LAB_FLAP_COUNT": str(FLAP_SENT)}
    if profile:  # each agent start under tests/lab/jobs/sampler.py: logs sampler-K.txt
        env["LAB_SAMPLE"] = "1"
    os.environ["LAB_MEM_MB"] = str(max(1024, 1024 + n // 10))  # the VM's, read by tests/lab/vm.py
    res = run_job(script, timeout=600 + 12 * n, env=env)
    KEEP.mkdir(parents=True, exist_ok=True)  # every run's output and logs, to trace a figure later
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{standin}" if standin else "")
    (KEEP / f"scale-{n}-{stamp}.out").write_text(res.stdout + "\n--stderr--\n" + res.stderr)
    for name, text in res.logs.items():
        (KEEP / f"scale-{n}-{stamp}-{name}").write_text(text)
    if res.rc != 0:
        raise RuntimeError(detail(res))
    sec = sections(res.stdout)
    fig: dict[str, object] = {"n": n, "charon": f"stand-in ({standin})" if standin else "charon 5.9.8"}
    events: list[float | None] = []
    statuses: list[float | None] = []
    for line in sec["figures"].splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "event_s" in row:
            events.append(row["event_s"])
            statuses.append(row.get("event_status_s"))
            continue
        if "writes" in row:
            row = {"restart_writes": row["writes"]}
        fig.update({k: v for k, v in row.items() if k not in ("states", "maxrss_mb", "floor_ops", "scrape_bytes", "listed")})
    ok = [e for e in events if e is not None]
    fig["event_s"] = {"median": statistics.median(ok) if ok else None, "max": max(ok) if ok else None, "lost": len(events) - len(ok)}
    seen = [e for e in statuses if e is not None]
    fig["event_status_s"] = {"median": statistics.median(seen) if seen else None, "max": max(seen) if seen else None}
    final = json.loads(sec["final"].strip().splitlines()[-1])
    fig["final_missing"], fig["final_orphans"] = len(final["missing"]), len(final["orphan_states"])
    if "udp" in sec:  # the stand-in has no peer: no traffic
        udp = json.loads(sec["udp"].strip().splitlines()[-1])
        fig["udp_children_ok"] = sum(v == 2 for v in udp.values())
    if "flap_wire" in sec:  # real charon: traffic across the device flap
        fig.update(flap_figures(json.loads(sec["flap_udp"].strip().splitlines()[-1]), section_json(sec, "flap_wire"), FLAP_SENT))
    if isinstance(fig.get("promote_s"), float) and isinstance(fig.get("floor_s"), float) and fig["floor_s"]:
        fig["promote_over_floor"] = round(fig["promote_s"] / fig["floor_s"], 1)  # type: ignore[operator]
    if isinstance(fig.get("restore_s"), float) and isinstance(fig.get("restore_floor_s"), float) and fig["restore_floor_s"]:
        fig["restore_over_floor"] = round(fig["restore_s"] / fig["restore_floor_s"], 1)  # type: ignore[operator]
    if isinstance(fig.get("restart_s"), float) and isinstance(fig.get("read_s"), float) and fig["read_s"]:
        fig["restart_over_read"] = round(fig["restart_s"] / fig["read_s"], 1)  # type: ignore[operator]
    return fig


FLAP_SENT = 400  # datagrams per sampled child across the flap, 0.1 s apart (jobs/scale.sh)


def flap_figures(udp: dict[str, int], wire: dict[str, dict], sent: int) -> dict[str, object]:
    """The flap's traffic: datagrams lost per sampled child, and what gwb's wire carried: ESP
    frames, how many the device enciphered (IV = sequence number), how many no key opened,
    and how many sequence numbers an SA put on the wire more than once (a repeat under one
    key reuses a GCM nonce: must be 0)."""
    rows = wire.values()
    return {"flap_children": len(udp), "flap_lost": sum(sent - v for v in udp.values()),
            "wire_spis": len(wire), "wire_frames": sum(w["frames"] for w in rows),
            "wire_device_frames": sum(w["seq_iv"] for w in rows),
            "wire_undecrypted": sum(w["frames"] - w["decrypted"] for w in rows),
            "wire_repeats": sum(len(w["seqs"]) - len(set(w["seqs"])) for w in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="10,100", help="comma-separated CHILD_SA counts")
    ap.add_argument("--json", action="store_true", help="one JSON object per line only")
    ap.add_argument("--standin", choices=("spokes", "many"), help="the charon stand-in in this shape instead of real charon")
    ap.add_argument("--profile", action="store_true", help="sample the agent's stacks (kept as .lab/bench/...-sampler-K.txt)")
    args = ap.parse_args()
    ok, why = lab_available()
    if not ok:
        print(f"lab not available: {why}", file=sys.stderr)
        return 2
    for n in (int(x) for x in args.n.split(",")):
        fig = measure(n, args.standin, args.profile)
        print(json.dumps(fig) if args.json else "  ".join(f"{k}={v}" for k, v in fig.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
