"""Issue 5: a real Prometheus server scrapes the agent in the lab; its query API returns what the kernel reports."""

from __future__ import annotations

import pytest

from .results import detail, received, section_json

pytestmark = pytest.mark.lab

SA = ("connection", "child", "uniqueid", "direction")


def by_sa(result: list) -> dict:
    return {tuple(r["metric"][k] for k in SA): r for r in result}


def test_prometheus_query_api_returns_the_per_sa_series_the_kernel_reports(sim_job):
    res, sec = sim_job("prometheus.sh", timeout=600)
    why = detail(res)
    assert received(sec["ping"], 10), why
    q = section_json(sec, "query")
    kernel = {k["spi"]: k for k in q["kernel"]}
    prom = q["prom"]
    info = by_sa(prom["swan_offload_sa_info"])
    assert {k[:2] + k[3:] for k in info} == {("net", "net", "in"), ("net", "net", "out")}, why
    spi = {k: r["metric"]["spi"] for k, r in info.items()}
    assert set(spi.values()) == set(kernel), (spi, kernel)  # the SAs the kernel holds, no more
    for name, field in (("swan_offload_sa_bytes_total", "bytes"), ("swan_offload_sa_packets_total", "packets")):
        series = by_sa(prom[name])
        assert set(series) == set(info), (name, series.keys(), why)
        for k, r in series.items():
            assert "spi" not in r["metric"] and "reqid" not in r["metric"]  # rekeys must not add counter series
            assert r["metric"]["device"] == "wan"
            assert int(float(r["value"][1])) == kernel[spi[k]][field], (name, k, r["value"], kernel[spi[k]])
    # 10 pings each way through the device: the device's counters, read by the kernel
    assert all(kernel[s]["packets"] >= 10 and kernel[s]["offload"] == "packet" for s in spi.values()), kernel
    modes = by_sa(prom["swan_offload_sa_offload == 1"])
    assert {k: r["metric"]["mode"] for k, r in modes.items()} == dict.fromkeys(info, "packet"), modes
    assert prom["swan_offload_vici_connected"][0]["value"][1] == "1"
    assert {r["metric"]["counter"] for r in prom["swan_offload_xfrm_errors_total"]} >= {"XfrmInNoStates", "XfrmOutNoStates"}
