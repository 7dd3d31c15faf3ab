"""Issue 5 under systemd's own semantics: the shipped unit, swan-offload.toml and swanctl.conf,
as an operator installs them, on a lab VM whose PID 1 is systemd (jobs/service.sh, also the
main demo). Gateway A's SAs run in the simulated packet-offload NIC."""

from __future__ import annotations

import json
import re

import pytest

from .results import assert_consistent, detail, ip_states, received, section_json

pytestmark = pytest.mark.lab

NET_ADMIN = f"{1 << 12:016x}"  # CAP_NET_ADMIN is capability 12


def _unit(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.M))


def test_shipped_unit_and_configs_run_the_agent_under_systemd(sim_job):
    res, sec = sim_job("service.sh", timeout=600, init="systemd")
    why = detail(res)
    # charon took the shipped swanctl.conf: its child is up with the example's proposal
    assert re.search(r"lan: #\d+, reqid \d+, INSTALLED, TUNNEL, ESP:AES_GCM_16-256", sec["charon"]), why
    # Type=notify: `systemctl start` returned with the unit running and its first STATUS= said
    unit = _unit(sec["start"])
    assert (unit["ActiveState"], unit["SubState"], unit["Result"]) == ("active", "running", "success"), why
    assert unit["StatusText"] == "1 CHILD_SA(s), 1 packet", why
    # the sandbox as the unit asks: CAP_NET_ADMIN and nothing else, in every set; no new
    # privileges; a seccomp filter; gateway A's namespace from NetworkNamespacePath
    proc = dict(re.findall(r"^(\w+):\s+(\S+)$", sec["proc"], flags=re.M))
    assert {k: proc[k] for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(("CapPrm", "CapEff", "CapBnd", "CapAmb"), NET_ADMIN), proc
    assert proc["NoNewPrivs"] == "1" and proc["Seccomp"] == "2", proc
    ns = re.search(r"netns: (\d+) gwa: (\d+)", sec["proc"])
    assert ns and ns[1] == ns[2], sec["proc"]
    assert sec["socket"].split()[:2] == ["srw-------", "root"], sec["socket"]
    # status over the control socket, read at a glance and as JSON: the example's child in packet offload
    assert re.search(r"^site-b/lan#\d+\s+\d+\s+[0-9a-f]{8}\s+[0-9a-f]{8}\s+packet\s+wan\b", sec["table"], flags=re.M), sec["table"]
    (child,) = section_json(sec, "status")["children"]
    assert (child["ike"], child["child"], child["mode"], child["device"], child["cause"]) == ("site-b", "lan", "packet", "wan", ""), child
    assert received(sec["ping"], 5), why
    ip = ip_states(sec["state"])
    for spi, d in ((child["spi_in"], "in"), (child["spi_out"], "out")):
        assert f"crypto offload parameters: dev wan dir {d} mode packet" in ip[spi], ip[spi]
    # metrics served from inside the sandbox (IPAddressAllow=localhost), decisions with their reason class
    assert 'swan_offload_decisions_total{outcome="packet",reason=""} 1.0' in sec["metrics"], sec["metrics"]
    for d in ("in", "out"):
        assert f'direction="{d}",mode="packet",uniqueid="{child["uniqueid"]}"}} 1.0' in sec["metrics"], sec["metrics"]
    # kill -9: Restart=on-failure brings a new process that finds the same child offloaded
    again = _unit(sec["restart"])
    assert again["NRestarts"] == "1" and again["ActiveState"] == "active" and again["MainPID"] != unit["MainPID"], sec["restart"]
    after = section_json(sec, "restarted")
    assert after["agent"]["pid"] == int(again["MainPID"]), after
    assert [(c["uniqueid"], c["mode"], c["device"]) for c in after["children"]] == [(child["uniqueid"], "packet", "wan")], after
    assert received(sec["ping2"], 5), why
    # a clean stop leaves the kernel as it is: traffic goes on in hardware, nothing stale
    stopped = _unit(sec["stop"])
    assert (stopped["ActiveState"], stopped["Result"]) == ("inactive", "success"), sec["stop"]
    assert received(sec["ping3"], 3), why
    kernel = section_json(sec, "kernel")
    assert_consistent(kernel, "after stop", why)
    assert all(s["offload"] == "packet" for s in kernel["states"]), kernel["states"]
    # journald took each line's priority from its <N> prefix: decisions at info, no prefix left
    journal = [json.loads(line) for line in sec["journal"].splitlines() if line.startswith("[")]
    decisions = [(p, m) for p, m in journal if m.endswith("packet offload on wan")]
    assert len(decisions) == 2 and all(p == 6 for p, _m in decisions), journal  # first start, and after the restart
    assert not any(re.match(r"<\d>", m) for _p, m in journal), journal
    nokeys = section_json(sec, "nokeys")
    assert nokeys["keys"] == 2 and nokeys["found_in"] == ["/run/nokeys-control"], nokeys
