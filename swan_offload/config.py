"""TOML configuration: VICI socket, per-connection offload rules, priorities.

A bad file stops the daemon before it touches anything, with the file, the key
and the reason (``ConfigError``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("packet", "crypto", "off")
FALLBACKS = ("crypto", "software", "keep")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_PATH = "/etc/swan-offload/swan-offload.toml"

# charon's automatic priorities (kernel_netlink_ipsec.c, PRIO_BASE 200000) are
# never below 68541, so the agent's band sits under that.
CHARON_MIN_PRIORITY = 68541
# width of the band: charon's specificity term (0..131459) halved
BAND_WIDTH = 131459 // 2 + 1


class ConfigError(ValueError):
    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key}: {reason}")


@dataclass(frozen=True)
class Rule:
    """How CHILD_SAs whose ``<connection>/<child>`` matches ``match`` are offloaded."""

    match: str = "*"
    mode: str = "packet"
    fallback: str = "crypto"
    interface: str | None = None

    def matches(self, conn: str, child: str) -> bool:
        return fnmatch.fnmatchcase(f"{conn}/{child}", self.match) or fnmatch.fnmatchcase(child, self.match)


@dataclass(frozen=True)
class Config:
    path: str = "<defaults>"
    vici_socket: str = "/var/run/charon.vici"
    reconnect_max_seconds: float = 30.0
    log_level: str = "info"
    priority_top: int = 68000
    bypass_priority: int = 32
    ike_ports: tuple[int, ...] = (500, 4500)
    seq_margin: int = 65536
    status_file: str = "/run/swan-offload/status.json"
    resync_seconds: float = 300.0
    rekey_after_restore: bool = True
    metrics_listen: str = ""  # host:port; "" serves no metrics (a config file defaults to DEFAULT_METRICS)
    control_socket: str = ""  # "" opens none (a config file, even an empty one, defaults to DEFAULT_CONTROL)
    rules: tuple[Rule, ...] = field(default_factory=lambda: (Rule(),))
    ike_addresses: tuple[str, ...] = ()  # local IKE addresses beyond those of charon's IKE_SAs
    restore_max_pps: int = 16_000_000  # the most packets per second one SA can send in the device
    # the idle full resync takes at most this share of a core: it waits at least its own last
    # duration / resync_share (a hub's lasts minutes under emulation)
    resync_share: float = 0.01
    move_batch: int = 64  # CHILD_SAs moved per netlink read and write batch (and per lock hold)

    def rule_for(self, conn: str, child: str) -> Rule:
        """First matching rule wins; with none, the CHILD_SA is left alone."""
        for r in self.rules:
            if r.matches(conn, child):
                return r
        return Rule(match="<none>", mode="off", fallback="keep")


DEFAULT_METRICS = "127.0.0.1:9814"  # loopback only: the series name connections and peers
DEFAULT_CONTROL = "/run/swan-offload/control.sock"


def split_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError otherwise. Port 0: any free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def _take(sec: dict[str, Any], key: str, typ: type | tuple[Any, ...], path: str, where: str, default: Any) -> Any:
    if key not in sec:
        return default
    v = sec.pop(key)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ConfigError(path, f"{where}{key}", f"expected {name}, got {type(v).__name__} {v!r}")
    return v


def _choice(v: str, allowed: tuple[Any, ...], path: str, key: str) -> str:
    if v not in allowed:
        raise ConfigError(path, key, f"{v!r} is not one of {', '.join(allowed)}")
    return v


def _no_leftovers(sec: dict[str, Any], path: str, where: str) -> None:
    for k in sec:
        raise ConfigError(path, f"{where}{k}", "unknown key")


def parse(text: str, path: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "<syntax>", str(e)) from e
    vici = dict(_take(data, "vici", dict, path, "", {}))
    agent = dict(_take(data, "agent", dict, path, "", {}))
    metrics = dict(_take(data, "metrics", dict, path, "", {}))
    raw_rules = _take(data, "rule", list, path, "", [{}])
    _no_leftovers(data, path, "")

    sock = _take(vici, "socket", str, path, "vici.", Config.vici_socket)
    recon = float(_take(vici, "reconnect_max_seconds", (int, float), path, "vici.", 30))
    if recon <= 0:
        raise ConfigError(path, "vici.reconnect_max_seconds", "must be positive")
    _no_leftovers(vici, path, "vici.")

    level = _choice(_take(agent, "log_level", str, path, "agent.", "info"), LOG_LEVELS, path, "agent.log_level")
    top = _take(agent, "priority_top", int, path, "agent.", 68000)
    if not BAND_WIDTH + 1 <= top < CHARON_MIN_PRIORITY:
        raise ConfigError(path, "agent.priority_top", f"must be in {BAND_WIDTH + 1}..{CHARON_MIN_PRIORITY - 1} (below every automatic charon priority)")
    bypass = _take(agent, "bypass_priority", int, path, "agent.", 32)
    if not 0 <= bypass < top - BAND_WIDTH:
        raise ConfigError(path, "agent.bypass_priority", f"must be below the IPsec band (< {top - BAND_WIDTH})")
    ports = _take(agent, "ike_ports", list, path, "agent.", [500, 4500])
    if not ports or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise ConfigError(path, "agent.ike_ports", "expected a list of UDP ports")
    ike_addrs = _take(agent, "ike_addresses", list, path, "agent.", [])
    try:
        ike_addrs = [str(ipaddress.ip_address(a)) for a in ike_addrs]
    except (ValueError, TypeError) as e:
        raise ConfigError(path, "agent.ike_addresses", f"expected a list of IP addresses: {e}") from e
    margin = _take(agent, "seq_margin", int, path, "agent.", 65536)
    if not 0 <= margin < 1 << 31:
        raise ConfigError(path, "agent.seq_margin", "must be in 0..2^31")
    max_pps = _take(agent, "restore_max_pps", int, path, "agent.", 16_000_000)
    if not 0 < max_pps < 1 << 31:
        raise ConfigError(path, "agent.restore_max_pps", "must be in 1..2^31")
    status_file = _take(agent, "status_file", str, path, "agent.", Config.status_file)
    resync = float(_take(agent, "resync_seconds", (int, float), path, "agent.", 300))
    if resync <= 0:
        raise ConfigError(path, "agent.resync_seconds", "must be positive")
    share = float(_take(agent, "resync_share", (int, float), path, "agent.", Config.resync_share))
    if not 0 < share <= 1:
        raise ConfigError(path, "agent.resync_share", "must be in (0, 1]")
    move_batch = _take(agent, "move_batch", int, path, "agent.", Config.move_batch)
    if not 0 < move_batch <= 4096:
        raise ConfigError(path, "agent.move_batch", "must be in 1..4096")
    rekey_restored = _take(agent, "rekey_after_restore", bool, path, "agent.", True)
    control = _take(agent, "control_socket", str, path, "agent.", DEFAULT_CONTROL)
    if control and not control.startswith("/"):
        raise ConfigError(path, "agent.control_socket", f"{control!r} is not an absolute path")
    _no_leftovers(agent, path, "agent.")

    listen = _take(metrics, "listen", str, path, "metrics.", DEFAULT_METRICS)
    if listen:
        try:
            if split_listen(listen)[1] == 0:
                raise ValueError(f"{listen!r} names no port")
        except ValueError as e:
            raise ConfigError(path, "metrics.listen", f'{e} ("" serves no metrics)') from e
    _no_leftovers(metrics, path, "metrics.")

    rules = []
    for i, r in enumerate(raw_rules):
        where = f"rule[{i}]."
        if not isinstance(r, dict):
            raise ConfigError(path, f"rule[{i}]", "expected a table")
        r = dict(r)
        rule = Rule(
            match=_take(r, "match", str, path, where, "*"),
            mode=_choice(_take(r, "mode", str, path, where, "packet"), MODES, path, where + "mode"),
            fallback=_choice(_take(r, "fallback", str, path, where, "crypto"), FALLBACKS, path, where + "fallback"),
            interface=_take(r, "interface", str, path, where, None),
        )
        _no_leftovers(r, path, where)
        rules.append(rule)
    return Config(path, sock, recon, level, top, bypass, tuple(ports), margin, status_file, resync, rekey_restored, listen, control, tuple(rules), tuple(ike_addrs), max_pps, share, move_batch)


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), "<file>", e.strerror or str(e)) from e
    return parse(text, str(p))
