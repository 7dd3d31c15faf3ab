"""Metrics: series read from the kernel's states at scrape time, over real HTTP."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import replace

from factories import ETH, KEY, child
from prometheus_client.parser import text_string_to_metric_families
from test_reconciler import CAPS, kernel_with

from swan_offload import config, metrics
from swan_offload.reconciler import Reconciler
from swan_offload.xfrm import constants as c
from swan_offload.xfrm.objects import LifetimeCur, Stats


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _scrape_over_http(k, r: Reconciler, stat: dict[str, int]) -> str:
    def snapshot() -> metrics.Snapshot:
        lat = r.ledger.take_latencies()
        return metrics.Snapshot(list(r.outcomes.values()), metrics.Agent(True, 0.0, r.runs, r.drift_repaired, 7, dict(r.ledger.decisions), lat))

    server, _thread = metrics.serve(metrics.AgentCollector(snapshot, k.dump_states, lambda: stat), "127.0.0.1:0")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    finally:
        server.shutdown()


def test_per_sa_series_carry_the_kernels_counters_with_bounded_labels_and_no_key():
    ch = replace(child(), install_time=3)
    k = kernel_with([ch])
    r = Reconciler(k, config.Config(), CAPS)
    r.ledger.announce(ch.key, time.time() - 0.25)  # charon's child-updown, as the daemon noted it
    r.reconcile([ch])
    # the device counted traffic; a dump reports it
    key_out = (ch.remote_host, ch.spi_out, c.IPPROTO_ESP)
    k.states[key_out] = replace(k.states[key_out], curlft=LifetimeCur(bytes=12345, packets=67), stats=Stats(replay=2, integrity_failed=1))
    text = _scrape_over_http(k, r, {"XfrmInError": 0, "XfrmOutPolError": 5})
    got = _samples(text)
    out = (("child", "net"), ("connection", ch.ike_name), ("device", "eth0"), ("direction", "out"), ("uniqueid", "1"))
    assert got[("swan_offload_sa_bytes_total", out)] == 12345
    assert got[("swan_offload_sa_packets_total", out)] == 67
    assert got[("swan_offload_sa_replay_errors_total", out)] == 2
    assert got[("swan_offload_sa_integrity_errors_total", out)] == 1
    assert got[("swan_offload_sa_offload", tuple(sorted((*out, ("mode", "packet")))))] == 1
    assert got[("swan_offload_sa_offload", tuple(sorted((*out, ("mode", "software")))))] == 0
    # SPIs only in the info metric: a rekey does not create new counter series
    info = {dict(lbl)["direction"]: dict(lbl) for (name, lbl) in got if name == "swan_offload_sa_info"}
    assert info["out"]["spi"] == f"{ch.spi_out:08x}" and info["in"]["spi"] == f"{ch.spi_in:08x}"
    assert all("spi" not in dict(lbl) for (name, lbl) in got if name != "swan_offload_sa_info")
    assert got[("swan_offload_xfrm_errors_total", (("counter", "XfrmOutPolError"),))] == 5
    assert got[("swan_offload_decisions_total", (("outcome", "packet"), ("reason", "")))] == 1
    assert got[("swan_offload_kernel_notifications_total", ())] == 7
    assert got[("swan_offload_promotion_latency_seconds_count", ())] == 1
    assert 0.25 <= got[("swan_offload_promotion_latency_seconds_sum", ())] < 5  # from the event, not the install time
    assert 3 <= got[("swan_offload_child_installed_seconds", (("child", "net"), ("connection", ch.ike_name), ("uniqueid", "1")))] < 60
    assert KEY.hex() not in text and KEY.hex().upper() not in text


def test_a_refused_sa_reports_mode_software_and_no_device():
    ch = child()
    k = kernel_with([ch], refuse={ETH.ifindex: "Device refuses"})
    r = Reconciler(k, config.Config(rules=(config.Rule(fallback="software"),)), CAPS)
    r.reconcile([ch])
    assert r.outcomes[ch.key].mode == "software"
    got = _samples(_scrape_over_http(k, r, {}))
    for direction in ("in", "out"):
        modes = {dict(lbl)["mode"]: v for (name, lbl), v in got.items() if name == "swan_offload_sa_offload" and dict(lbl)["direction"] == direction}
        assert modes == {"packet": 0, "crypto": 0, "software": 1}, modes
    assert {dict(lbl)["device"] for (name, lbl) in got if name == "swan_offload_sa_bytes_total"} == {""}
    # the decision is counted by its bounded reason class; the device's words stay out of labels
    assert got[("swan_offload_decisions_total", (("outcome", "software"), ("reason", "device_refused")))] == 1
    assert all("Device refuses" not in v for (name, lbl) in got for _k, v in lbl)
    assert got[("swan_offload_promotion_latency_seconds_count", ())] == 0


def test_xfrm_stat_is_read_from_proc_format(tmp_path):
    p = tmp_path / "xfrm_stat"
    p.write_text("XfrmInError             \t0\nXfrmOutPolError         \t12\n")
    assert metrics.read_xfrm_stat(str(p)) == {"XfrmInError": 0, "XfrmOutPolError": 12}
    assert metrics.read_xfrm_stat(str(tmp_path / "missing")) == {}


def test_metrics_listen_is_checked_and_defaults_to_loopback():
    assert config.parse("").metrics_listen == "127.0.0.1:9814"
    assert config.parse('[metrics]\nlisten = ""\n').metrics_listen == ""
    assert config.split_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("9814", "host:", "h:70000", "h:0"):
        try:
            config.parse(f'[metrics]\nlisten = "{bad}"\n')
        except config.ConfigError as e:
            assert "metrics.listen" in str(e)
        else:
            raise AssertionError(bad)



def test_the_text_format_is_what_prometheus_client_writes():
    """exposition.text against prometheus_client's own generate_latest (the oracle) on the
    agent's families after a reconcile and a promotion, and on families that need escaping,
    special values, timestamps and OpenMetrics-only samples."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, StateSetMetricFamily

    from swan_offload import exposition

    ch = replace(child(), install_time=3)
    k = kernel_with([ch])
    r = Reconciler(k, config.Config(), CAPS)
    r.reconcile([ch])
    r.ledger.latencies += [0.07, 3.0, 1e9]
    snap = metrics.Snapshot(list(r.outcomes.values()), metrics.Agent(True, 0.0, r.runs, r.drift_repaired, 7, dict(r.ledger.decisions), r.ledger.take_latencies()))
    agent = list(metrics.AgentCollector(lambda: snap, k.dump_states, lambda: {"XfrmOutNoStates": 12}).collect())
    odd = GaugeMetricFamily("odd", 'back\\slash and\nnewline "doc"', labels=["v"])
    odd.add_metric(['a\\b"c"\nd'], float("inf"), timestamp=1700000000.123)
    odd.add_metric(["nan"], float("nan"))
    odd.add_metric(["big"], 123456789.0)
    odd.add_metric(["neg"], float("-inf"))
    made = CounterMetricFamily("made", "with created", labels=["x"], created=1.5)
    made.add_metric(["1"], 2, created=1700000000.0)
    info = InfoMetricFamily("build", "info", value={"version": "1"})
    states = StateSetMetricFamily("st", "a stateset", value={"a": True, "b": False})
    families = agent + [odd, made, info, states]

    class Fixed:
        def collect(self):
            return families

    assert len(agent) > 5
    assert exposition.text(families) == generate_latest(Fixed())


def test_the_metrics_endpoint_answers_get_only(tmp_path):
    from swan_offload import exposition

    fam = metrics.GaugeMetricFamily("up_here", "one gauge")
    fam.add_metric([], 1)
    for host in ("127.0.0.1", "::1"):
        server, thread = exposition.serve(lambda: [fam], host, 0)
        base = f"http://{'[::1]' if ':' in host else host}:{server.server_address[1]}"
        try:
            with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
                assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                assert resp.read() == b"# HELP up_here one gauge\n# TYPE up_here gauge\nup_here 1.0\n"
            for path, method, code in (("/nothing", "GET", 404), ("/metrics", "POST", 405)):
                try:
                    urllib.request.urlopen(urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None), timeout=5)
                    raise AssertionError(f"{method} {path} answered 200")
                except urllib.error.HTTPError as e:
                    assert e.code == code, (path, e.code)
        finally:
            server.shutdown()
            server.server_close()
        thread.join(5)
        assert not thread.is_alive()
