"""``swan-offload run | plan | status``. None of them ever prints key material."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import capability, config, control, logs, planner, vici_source
from .backend import NetlinkBackend

log = logging.getLogger("swan_offload")


def _setup_logging(level: str) -> None:
    logs.setup(level)


def _load(path: str | None) -> config.Config:
    if path is None and not Path(config.DEFAULT_PATH).exists():
        return config.parse("", "<defaults>")  # a file's defaults: control socket, metrics
    return config.load(path or config.DEFAULT_PATH)


def cmd_run(args: argparse.Namespace, cfg: config.Config) -> int:
    from .daemon import Daemon

    d = Daemon(cfg, args.netns)
    signal.signal(signal.SIGTERM, lambda *_: d.stop())
    signal.signal(signal.SIGINT, lambda *_: d.stop())
    return d.run()


def plan_rows(p: planner.Plan, margin: int) -> dict[str, Any]:
    children = []
    for cp in p.children:
        changes = planner.state_changes(cp, margin)
        children.append(
            {
                "ike": cp.child.ike_name,
                "child": cp.child.name,
                "uniqueid": cp.child.uniqueid,
                "reqid": cp.child.reqid,
                "spi_in": f"{cp.child.spi_in:08x}",
                "spi_out": f"{cp.child.spi_out:08x}",
                "target": cp.target,
                "fallback": cp.fallback("", "").target if cp.target == planner.PACKET else None,
                "device": cp.device.name if cp.device else None,
                "reason": cp.reason,
                "states": [new.describe() for _cur, new in changes],
                "policies": [x.describe() for x in cp.policies],
            }
        )
    return {
        "children": children,
        "bypasses": [x.describe() for x in p.bypasses],
        "remove": [x.describe() for x in p.stale_policies] + [x.describe() for x in p.stale_states],
    }


def cmd_plan(args: argparse.Namespace, cfg: config.Config) -> int:
    from .reconciler import Reconciler

    backend = NetlinkBackend(args.netns)
    caps = capability.probe(backend)  # before charon: no kernel access, no point reading it
    try:
        sas = vici_source.list_sas(cfg.vici_socket)
    except vici_source.VICI_ERRORS as e:
        print(f"swan-offload: cannot read charon at {cfg.vici_socket}: {e}", file=sys.stderr)
        return 1
    for err in sas.errors:
        print(f"swan-offload: list-sas: {err}; that IKE_SA's kernel objects would be left as they are", file=sys.stderr)
    rows = plan_rows(Reconciler(backend, cfg, caps).plan(sas), cfg.seq_margin)
    rows["kernel"] = caps.reason
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"kernel: {caps.reason}")
    for ch in rows["children"]:
        print(f"{ch['ike']}/{ch['child']}#{ch['uniqueid']} reqid {ch['reqid']} spi in {ch['spi_in']} out {ch['spi_out']}: {ch['target']}"
              + (f" on {ch['device']}" if ch["device"] else "") + (f" ({ch['reason']})" if ch["reason"] else "")
              + (f", {ch['fallback']} if refused" if ch["fallback"] else ""))
        for line in ch["states"] + ch["policies"]:
            print(f"  install {line}")
    for line in rows["bypasses"]:
        print(f"bypass {line}")
    for line in rows["remove"]:
        print(f"remove {line}")
    return 0


def cmd_status(args: argparse.Namespace, cfg: config.Config) -> int:
    path = cfg.control_socket or config.DEFAULT_CONTROL
    try:
        data = control.request(path)
    except control.DaemonAbsent:
        print(f"swan-offload: no daemon is running (nothing answers on {path}).\n"
              "Start it with 'systemctl start swan-offload' (or 'swan-offload run' in the foreground).", file=sys.stderr)
        return 3
    except PermissionError:
        print(f"swan-offload: {path} is root-only: run status as root", file=sys.stderr)
        return 2
    except (control.ControlError, OSError) as e:
        print(f"swan-offload: the daemon on {path} did not answer: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(status_table(data, time.time(), args.not_offloaded, args.connection, args.summary))
    return 0


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_table(data: dict[str, Any], now: float, not_offloaded: bool = False, connection: str | None = None,
                 summary: bool = False) -> str:
    """What a person reads at a glance: the agent's health and a summary that fits one screen
    at any scale (counts by mode, why not packet, per device), then one line per CHILD_SA,
    filtered (``not_offloaded``: not in packet offload; ``connection``: one IKE_SA name)."""
    a = data.get("agent", {})
    last = a.get("last_event") or 0
    lines = [
        f"charon: {a.get('charon') or 'not connected'}   vici: {'up' if a.get('vici_connected') else 'DOWN'}"
        f"   last event: {_age(now - last) + ' ago' if last else 'none'}   reconciles: {a.get('reconcile_runs', 0)}",
        f"kernel: {a.get('kernel_reason')}",
    ]
    for dev, why in (a.get("refusing_devices") or {}).items():
        lines.append(f"device {dev} refuses packet offload: {why}")
    for err in a.get("vici_unreadable") or []:
        lines.append(f"list-sas entry not readable (its kernel objects left as they are): {err}")
    children = data.get("children", [])
    counts = Counter(ch["mode"] for ch in children)
    lines.append(f"{len(children)} CHILD_SA(s): " + (", ".join(f"{n} {m}" for m, n in sorted(counts.items())) or "none"))
    causes = Counter((ch["mode"], ch.get("cause") or "-") for ch in children if ch["mode"] != planner.PACKET)
    if causes:
        lines.append("  not packet: " + ", ".join(f"{n} {m} ({cause})" for (m, cause), n in sorted(causes.items())))
    devices = Counter((ch["device"], ch["mode"]) for ch in children if ch["device"])
    if devices:
        lines.append("  devices: " + ", ".join(f"{dev} {n} {m}" for (dev, m), n in sorted(devices.items())))
    rows = [ch for ch in children if (not not_offloaded or ch["mode"] != planner.PACKET) and (connection is None or ch["ike"] == connection)]
    if summary or not rows:
        return "\n".join(lines)
    if len(rows) != len(children):
        lines.append(f"showing {len(rows)} of {len(children)}")
    fmt = "{:<28} {:>6} {:>8} {:>8} {:<9} {:<10} {:>7}  {}"
    lines.append(fmt.format("CHILD_SA", "REQID", "SPI-IN", "SPI-OUT", "MODE", "DEVICE", "SINCE", "REASON"))
    for ch in rows:
        name = f"{ch['ike']}/{ch['child']}#{ch['uniqueid']}"
        lines.append(fmt.format(name, ch["reqid"], ch["spi_in"], ch["spi_out"], ch["mode"], ch["device"] or "-",
                                _age(now - ch.get("since", now)), ch["reason"]).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="swan-offload", description="Move strongSwan CHILD_SAs into NIC packet offload.")
    ap.add_argument("-c", "--config", help=f"TOML config (default {config.DEFAULT_PATH} if present)")
    ap.add_argument("--netns", help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the daemon in the foreground")
    for name, text in (("plan", "print what would be installed; change nothing"), ("status", "per CHILD_SA offload status")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", help="everything, as JSON (no filters)")
        if name == "status":
            sp.add_argument("--summary", action="store_true", help="the summary only, no table")
            sp.add_argument("--not-offloaded", action="store_true", help="only CHILD_SAs not in packet offload")
            sp.add_argument("--connection", metavar="NAME", help="only CHILD_SAs of this connection (IKE_SA name)")
    args = ap.parse_args(argv)
    try:
        cfg = _load(args.config)
    except config.ConfigError as e:
        print(f"swan-offload: bad config: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    try:
        return {"run": cmd_run, "plan": cmd_plan, "status": cmd_status}[args.cmd](args, cfg)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            raise
        print(f"swan-offload: XFRM netlink needs CAP_NET_ADMIN (run as root): {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
