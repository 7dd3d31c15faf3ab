"""Prometheus metrics, computed at scrape time from what the agent recorded and one kernel dump.

Counter labels stay bounded (connection, child, uniqueid, direction, device): SPIs change at
every rekey, so they only appear in an info metric. A scrape reads the kernel's states with
one dump (which, on kernels >= 6.4, asks each device for its own counters) and never sends
one request per SA. Nothing here ever sees key material: the dump is read lean
(xfrm/counters.py), key attributes skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import exposition
from .config import split_listen
from .ledger import Outcome
from .xfrm.counters import SaCounters

PREFIX = "swan_offload"
SA_LABELS = ["connection", "child", "uniqueid", "direction", "device"]
MODES = ("packet", "crypto", "software")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
XFRM_STAT = "/proc/net/xfrm_stat"


def read_xfrm_stat(path: str = XFRM_STAT) -> dict[str, int]:
    """The kernel's global XFRM error counters (``XfrmInError 0`` lines); {} without XFRM."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f]
    except OSError:
        return {}
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


@dataclass
class Agent:
    """The agent's own numbers, copied under the daemon's lock for one scrape."""

    vici_connected: bool = False
    last_event: float = 0.0  # wall clock; 0 = none yet
    reconcile_runs: int = 0
    drift_repaired: int = 0
    notifications: int = 0
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (outcome mode, cause) -> times decided
    latencies: list[float] = field(default_factory=list)  # promotions since the last scrape
    vici_unreadable: int = 0  # list-sas entries that did not parse


@dataclass
class Snapshot:
    outcomes: list[Outcome]
    agent: Agent


class AgentCollector(Collector):
    """Builds every family per scrape; ``snapshot`` and ``states`` are the daemon's readers."""

    def __init__(self, snapshot: Callable[[], Snapshot], states: Callable[[], list[SaCounters]], xfrm_stat: Callable[[], dict[str, int]] = read_xfrm_stat) -> None:
        self.snapshot = snapshot
        self.states = states
        self.xfrm_stat = xfrm_stat
        self._lock = threading.Lock()
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative over the daemon's life
        self._latency_sum = 0.0

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        try:
            states = {(s.spi, s.reqid): s for s in self.states()}
            kernel_ok = 1
        except OSError:
            states, kernel_ok = {}, 0
        yield from self._per_sa(snap.outcomes, states)
        yield from self._agent(snap.agent, kernel_ok)
        stat = CounterMetricFamily(f"{PREFIX}_xfrm_errors", "The kernel's global XFRM error counters (/proc/net/xfrm_stat)", labels=["counter"])
        for name, value in sorted(self.xfrm_stat().items()):
            stat.add_metric([name], value)
        yield stat

    def _per_sa(self, outcomes: list[Outcome], states: dict[tuple[int, int], SaCounters]) -> Iterator[Metric]:
        f = {
            "bytes": CounterMetricFamily(f"{PREFIX}_sa_bytes", "Bytes through the SA, as the kernel (or the device, when offloaded) counts them", labels=SA_LABELS, unit="bytes"),
            "packets": CounterMetricFamily(f"{PREFIX}_sa_packets", "Packets through the SA", labels=SA_LABELS),
            "replay": CounterMetricFamily(f"{PREFIX}_sa_replay_errors", "Packets the SA dropped as replays or outside its window", labels=SA_LABELS),
            "integrity": CounterMetricFamily(f"{PREFIX}_sa_integrity_errors", "Packets the SA dropped for a bad ICV", labels=SA_LABELS),
        }
        mode = GaugeMetricFamily(f"{PREFIX}_sa_offload", "1 for the offload mode the SA runs in (packet, crypto, software), 0 for the others", labels=[*SA_LABELS, "mode"])
        age = GaugeMetricFamily(f"{PREFIX}_child_installed_seconds", "Seconds since charon installed the CHILD_SA", labels=["connection", "child", "uniqueid"], unit="seconds")
        info = InfoMetricFamily(f"{PREFIX}_sa", "The SA's SPI and reqid (they change at every rekey)", labels=["connection", "child", "uniqueid", "direction"])
        now = time.time()
        for o in outcomes:
            uid = str(o.uniqueid)
            if o.installed:
                age.add_metric([o.ike, o.child, uid], max(0.0, now - o.installed))
            for direction, spi in (("in", o.spi_in), ("out", o.spi_out)):
                st = states.get((spi, o.reqid))
                if st is None:
                    continue
                running = st.offload.mode if st.offload else "software"
                device = (o.device or "") if st.offload else ""
                labels = [o.ike, o.child, uid, direction, device]
                f["bytes"].add_metric(labels, st.curlft.bytes)
                f["packets"].add_metric(labels, st.curlft.packets)
                f["replay"].add_metric(labels, st.stats.replay + st.stats.replay_window)
                f["integrity"].add_metric(labels, st.stats.integrity_failed)
                for m in MODES:
                    mode.add_metric([*labels, m], 1.0 if m == running else 0.0)
                info.add_metric([o.ike, o.child, uid, direction], {"spi": f"{spi:08x}", "reqid": str(o.reqid)})
        yield from f.values()
        yield from (mode, age, info)

    def _agent(self, a: Agent, kernel_ok: int) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_vici_connected", "1 while the agent holds a VICI session with charon", value=int(a.vici_connected))
        yield GaugeMetricFamily(f"{PREFIX}_kernel_read_ok", "1 if this scrape could dump the kernel's states", value=kernel_ok)
        if a.last_event:
            yield GaugeMetricFamily(f"{PREFIX}_last_event_age_seconds", "Seconds since the last VICI child-SA event", value=max(0.0, time.time() - a.last_event), unit="seconds")
        yield CounterMetricFamily(f"{PREFIX}_reconcile_runs", "Reconcile runs (list-sas, one kernel dump, apply the difference)", value=a.reconcile_runs)
        yield CounterMetricFamily(f"{PREFIX}_drift_repaired", "Kernel objects found differing from the plan and repaired", value=a.drift_repaired)
        yield CounterMetricFamily(f"{PREFIX}_vici_unreadable", "list-sas entries that did not parse (their IKE_SA's kernel objects were left as they were)", value=a.vici_unreadable)
        yield CounterMetricFamily(f"{PREFIX}_kernel_notifications", "XFRM notifications the agent received", value=a.notifications)
        decided = CounterMetricFamily(
            f"{PREFIX}_decisions",
            "CHILD_SA decisions by outcome (packet, crypto, software, keep, ...) and reason (why not packet: device_refused, no_device, ...; empty for packet)",
            labels=["outcome", "reason"],
        )
        for (outcome, cause), n in sorted(a.decisions.items()):
            decided.add_metric([outcome, cause], n)
        yield decided
        with self._lock:
            for v in a.latencies:
                self._observe(v)
            cumulative, total = [], 0
            for n in self._buckets:
                total += n
                cumulative.append(total)
            buckets = [(str(b), c) for b, c in zip(LATENCY_BUCKETS, cumulative)] + [("+Inf", cumulative[-1])]
            yield HistogramMetricFamily(f"{PREFIX}_promotion_latency_seconds", "From charon's event for a new or rekeyed CHILD_SA to the agent having its SAs offloaded", buckets=buckets, sum_value=self._latency_sum, unit="seconds")

    def _observe(self, v: float) -> None:
        i = next((i for i, b in enumerate(LATENCY_BUCKETS) if v <= b), len(LATENCY_BUCKETS))
        self._buckets[i] += 1
        self._latency_sum += v


def serve(collector: AgentCollector, listen: str) -> tuple[object, threading.Thread]:
    """Serve /metrics on ``listen``: this collector's families, collected per request."""
    host, port = split_listen(listen)
    return exposition.serve(collector.collect, host, port)
