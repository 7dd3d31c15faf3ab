"""Lab scenarios 3-8 of the agent on real charon, a real kernel and real ESP.

Each job boots one VM for a group of scenarios; its output is split into "== NAME"
sections (see jobs/*.sh) and every assertion names the section it reads. No device in
the plain VM takes packet offload (veth), so every CHILD_SA ends in its configured fallback;
what is proven there is that charon's SAs are never lost or duplicated, traffic flows,
and the agent leaves nothing behind. The lifecycle and kill -9 scenarios run a second
time on the simulated NIC (tests/lab/sim, LAB_WAN=swsim), with every SA in "hardware".
"""

from __future__ import annotations

import re

import pytest

from .results import assert_consistent, detail, ip_states, received, section_json

pytestmark = pytest.mark.lab
REFUSED = "Policy offload is not supported"  # the 6.12 kernel's text for veth
WANS = ("veth", "swsim")
MODE = {"veth": "software", "swsim": "packet"}  # where every child of these jobs ends


def wan_job(request, wan: str):
    """lab_job on veth; on swsim, sim_job (which requires the built module) with LAB_WAN set."""
    if wan == "veth":
        return request.getfixturevalue("lab_job")
    job = request.getfixturevalue("sim_job")
    return lambda name, timeout: job(name, timeout, env={"LAB_WAN": "swsim"})


def matches_plan(plan_row: dict, status_row: dict) -> bool:
    """What the daemon reached is what plan said: the target, or the fallback it named for a refusal."""
    mode, fb = status_row["mode"], plan_row["fallback"]
    if plan_row["target"] != "packet":
        return mode == plan_row["target"]
    if mode == "packet":
        return status_row["device"] == plan_row["device"]
    crypto_refused = fb == "crypto" and mode == "software" and "crypto offload refused" in status_row["reason"]
    return mode == fb or crypto_refused


def test_shapes_and_plan(lab_job):
    """Scenario 3 (transport, IPv6, two CHILD_SAs in one IKE_SA, ESN) and 8 (plan = what is installed)."""
    res, sec = lab_job("shapes.sh", timeout=480)
    why = detail(res)
    before, kernel, peer = (section_json(sec, k) for k in ("before", "kernel", "peer"))
    kids = {c["child"]: c for c in before["children"]}
    assert set(kids) == {"icmp", "udp", "trans", "net6"} and all(c["state"] == "INSTALLED" for c in kids.values()), why
    assert {c["ike"] for c in kids.values() if c["child"] != "net6"} == {"multi"}  # one IKE_SA, three children
    assert len({c["uniqueid"] for c in kids.values()}) == 4
    assert kids["trans"]["mode"] == "TRANSPORT" and kids["icmp"]["mode"] == "TUNNEL", why
    assert kids["icmp"]["esn"] and kids["net6"]["esn"] and not kids["udp"]["esn"], why
    assert_consistent(before, "before", why)
    assert_consistent(kernel, "kernel", why)
    # iproute2 6.15 reads the same kernel: transport mode and ESN where negotiated
    ip = ip_states(sec["ipstate"])
    for name, mode, esn in (("trans", "transport", False), ("icmp", "tunnel", True), ("udp", "tunnel", False), ("net6", "tunnel", True)):
        for spi in (kids[name]["spi_in"], kids[name]["spi_out"]):
            assert f"mode {mode}" in ip[spi], (name, ip[spi])
            assert ("esn" in ip[spi]) == esn, (name, ip[spi])
    # each child ended in its configured fallback, with the kernel's reason
    status = section_json(sec, "status")
    rows = {c["child"]: c for c in status["children"]}
    want = {"icmp": "software", "udp": "software", "trans": "software", "net6": "keep"}
    assert {k: r["mode"] for k, r in rows.items()} == want, why
    for r in rows.values():
        assert REFUSED in r["reason"], why
    assert "crypto offload refused" in rows["icmp"]["reason"], why  # veth accepts crypto offload and ignores it
    # traffic: every flow through its own SA (the peer's inbound counter for our outbound SPI)
    assert received(sec["ping"], 3) and received(sec["pingtrans"], 3) and received(sec["ping6"], 3), why
    assert section_json(sec, "udp") == {"4000": 5}, why
    peer_pk = {s["spi"]: s["packets"] for s in peer["states"]}
    assert peer_pk[kids["udp"]["spi_out"]] == 5, peer_pk
    for name in ("icmp", "trans", "net6"):
        assert peer_pk[kids[name]["spi_out"]] >= 3, (name, peer_pk)
    # scenario 8: the plan printed before the daemon ran is what the daemon then did
    plan = section_json(sec, "plan")
    prow = {c["child"]: c for c in plan["children"]}
    assert set(prow) == set(rows)
    for name, p in prow.items():
        s = rows[name]
        assert (p["uniqueid"], p["reqid"], p["spi_in"], p["spi_out"]) == (s["uniqueid"], s["reqid"], s["spi_in"], s["spi_out"])
        assert p["target"] == "packet" and p["device"] == "wan", p
        assert matches_plan(p, s), (p, s)
        # one offloaded twin of charon's OUT policy; IN stays charon's, in software
        assert len(p["policies"]) == 1 and all(f"reqid {p['reqid']}" in x and "dir out" in x and "offload packet" in x for x in p["policies"]), p
    installed = {x["what"] for x in kernel["agent_policies"]}
    planned_hw = {x for name, p in prow.items() if rows[name]["mode"] == "packet" for x in p["policies"]}
    assert planned_hw <= installed and installed <= planned_hw | set(plan["bypasses"]), (planned_hw, installed)
    assert len(plan["bypasses"]) == 8  # UDP 500/4500, in/out, IPv4 and IPv6 on wan
    # no key anywhere in what the job printed (plan, status, log) nor in the agent's log
    nokeys = section_json(sec, "nokeys")
    assert nokeys["keys"] == 8 and nokeys["found_in"] == ["/run/nokeys-control"], nokeys

def child_of(snap: dict, name: str) -> dict:
    (c,) = [c for c in snap["children"] if c["child"] == name and c["state"] == "INSTALLED"]
    return c


def state_spis(snap: dict) -> set[str]:
    return {s["spi"] for s in snap["states"]}


def decided(status: dict) -> dict[tuple[str, int], dict]:
    return {(c["child"], c["uniqueid"]): c for c in status["children"] if c["mode"] != "pending"}


def loss_runs(got: set[int], sent: int) -> int:
    """How many separate stretches of 0..sent-1 are missing from ``got``: one per outage."""
    return sum(1 for i in range(sent) if i not in got and (i == 0 or i - 1 in got))


def lost(sec: str, sent: int) -> int:
    m = re.search(r"(\d+) packets received", sec)
    return sent - int(m.group(1)) if m else sent


def xfrm_stat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(Xfrm\w+)\s+(\d+)$", text, re.M)}


@pytest.mark.parametrize("wan", WANS)
def test_rekey_terminate_and_charon_restart(request, wan):
    """Scenarios 4 (swanctl --rekey and lifetime rekeys), 5 (child and IKE termination), 7 (charon restart)."""
    res, sec = wan_job(request, wan)("lifecycle.sh", timeout=600)
    why = detail(res)
    snaps = {k: section_json(sec, k) for k in ("start", "rekeyed", "lifetime", "child_down", "ike_down", "restart_before", "restart_after")}
    for name, snap in snaps.items():
        assert_consistent(snap, name, why)
    start, rekeyed, lifetime = snaps["start"], snaps["rekeyed"], snaps["lifetime"]
    st = {c["child"]: c["mode"] for c in section_json(sec, "start_status")["children"]}
    assert st == {"net": MODE[wan], "fast": MODE[wan]}, why
    # 4a: swanctl --rekey: a new CHILD_SA, decided by the agent; the old SAs gone after charon's delete
    old, new = child_of(start, "net"), child_of(rekeyed, "net")
    assert new["uniqueid"] != old["uniqueid"] and new["reqid"] == old["reqid"], why
    assert not {old["spi_in"], old["spi_out"]} & state_spis(rekeyed), why
    assert {new["spi_in"], new["spi_out"]} <= state_spis(rekeyed), why
    assert ("net", new["uniqueid"]) in decided(section_json(sec, "rekeyed_status")), why
    assert ("net", old["uniqueid"]) not in decided(section_json(sec, "rekeyed_status")), why
    stream = section_json(sec, "stream").get("4000", 0)
    if wan == "veth":
        assert received(sec["pinger"], 60), sec["pinger"]  # no ping lost across the rekey
        assert stream == 220, why  # 4b: lifetime rekeys of "fast" under a UDP stream, nothing lost
    else:
        # Offloaded: charon 5.9 installs each rekeyed SA in software, and 6.12 puts a software SA
        # ahead of the offloaded ones of its hash bucket, where the offloaded lookup stops: until
        # the agent has moved it (on the kernel's notification) the kernel finds no state and
        # drops (issue 15 closes that window). How many packets that is depends on how long the
        # emulated VM takes to run the move (1 of 60 pings locally, 4 in a CI run with two VMs
        # on two cores), so the bound is on counts, not on time: each rekey costs at most two
        # runs of losses (its outbound SA's window and its inbound swap), never a stop of its
        # own, and the window's drops are counted: by the kernel (no state yet) or by the device
        # (an offloaded OUT policy whose SA is not on it yet).
        rekeys = max(1, child_of(lifetime, "fast")["uniqueid"] - child_of(rekeyed, "fast")["uniqueid"])
        pings = {int(n) for n in re.findall(r"seq=(\d+) ", sec["pinger"])}
        datagrams = set(section_json(sec, "stream_numbers"))
        assert len(pings) == 60 - lost(sec["pinger"], 60) and len(datagrams) == stream, (sec["pinger"], stream, why)
        assert loss_runs(pings, 60) <= 2 and loss_runs(datagrams, 220) <= 2 * rekeys, (sec["pinger"], sorted(datagrams), rekeys, why)
        gone = lost(sec["pinger"], 60) + 220 - stream
        # every lost packet is counted somewhere: /proc/net/xfrm_stat holds only drop counters
        # (a CI run lost 2 with the three window counters at 0), the device's, the hosts' stacks
        counted = {f"{gw}:{k}": v for gw, s in (("gwa", "xfrm_stat"), ("gwb", "xfrm_stat_b")) for k, v in xfrm_stat(sec[s]).items() if v}
        counted |= {k: v for k, v in section_json(sec, "link_drops").items() if v}
        counted |= {f"hosts:{k}": v for k, v in section_json(sec, "host_drops").items() if v}
        assert gone == 0 or counted, (gone, sorted(pings), sorted(datagrams), why)
        assert "offloaded on arrival" in sec["log"], why
    # issue 13: events were planned alone, from the kernel mirror the monitor keeps; every full
    # resync (each LAB_RESYNC_SECONDS idle) reloaded it and found nothing the stream had missed
    agent = section_json(sec, "lifetime_status")["agent"]
    mirror = agent["kernel_mirror"]
    assert mirror["fed"] and mirror["valid"] and mirror["loads"] >= 2 and mirror["drift"] == 0, agent
    assert agent["scoped_reconciles"] >= 2, agent
    f0, f1 = child_of(rekeyed, "fast"), child_of(lifetime, "fast")
    assert f1["uniqueid"] != f0["uniqueid"], why
    assert not {f0["spi_in"], f0["spi_out"]} & state_spis(lifetime), why
    # "fast" may have rekeyed again between the two reads: the agent knows this one or a newer one
    assert max(u for c, u in decided(section_json(sec, "lifetime_status")) if c == "fast") >= f1["uniqueid"], why
    # 5: termination leaves the kernel holding exactly what charon holds, nothing of the agent's
    down = snaps["child_down"]
    assert [c["child"] for c in down["children"]] == ["net"] and len(down["states"]) == 2, why
    assert all(p["reqids"] == [new["reqid"]] for p in down["charon_policies"] if p["reqids"]), why
    gone = snaps["ike_down"]
    assert gone["children"] == [] and gone["states"] == [], why
    assert [p for p in gone["charon_policies"] if p["reqids"]] == [] and gone["agent_policies"] == [], why
    assert section_json(sec, "ike_down_status")["children"] == [], why
    # 7: charon restarted under the agent: it reconnected and decided the new CHILD_SA
    before, after = child_of(snaps["restart_before"], "net"), child_of(snaps["restart_after"], "net")
    assert after["spi_in"] != before["spi_in"], why
    assert not {before["spi_in"], before["spi_out"]} & state_spis(snaps["restart_after"]), why
    status = section_json(sec, "restart_status")
    assert status["agent"]["vici_connected"] and set(decided(status)) == {("net", after["uniqueid"])}, why
    assert "charon went away" in sec["log"] and sec["log"].count("connected to charon 5.9.8") == 2, why
    assert received(sec["ping"], 3), why


@pytest.mark.parametrize("wan", WANS)
def test_kill_9_with_50_child_sas(request, wan):
    """Scenario 6: the agent killed three times mid-run over 50 CHILD_SAs, then restarted."""
    res, sec = wan_job(request, wan)("kill9.sh", timeout=900)
    why = detail(res)
    up = section_json(sec, "up")
    kids = [c for c in up["children"] if c["state"] == "INSTALLED"]
    assert len(kids) == 50 and len(up["states"]) == 100, why
    assert section_json(sec, "udp_before") == {str(5000 + i): 2 for i in range(1, 51)}, why
    leftovers, done = 0, [0]
    for at in (3, 10, 25):
        done.append(int(re.search(r"decisions logged so far: (\d+)", sec[f"killed_{at}"])[1]))
        snap = section_json(sec, f"after_kill_{at}")
        # whatever the agent was doing when it died, charon's SAs are all there, once
        assert snap["missing"] == [] and snap["duplicate"] == [], (at, snap, why)
        assert {s["spi"] for s in snap["states"] if s["reqid"] != 0x73776F66} == {s["spi"] for s in up["states"]}, why
        leftovers = max(leftovers, snap["probe_states"])
    # at least one kill landed before its run had decided all 50 (TCG timing varies)
    assert any(0 < b - a < 50 for a, b in zip(done, done[1:])), (done, why)
    final = section_json(sec, "final")
    assert_consistent(final, "final", why)
    assert {s["spi"] for s in final["states"]} == {s["spi"] for s in up["states"]}, why
    if leftovers:  # a kill landed between a probe's add and delete: the restart removed it
        assert "probe state(s) left by an earlier run" in sec["log"], why
    rows = section_json(sec, "status")["children"]
    assert len(rows) == 50 and {r["mode"] for r in rows} == {MODE[wan]}, why
    assert section_json(sec, "udp_after") == {str(5000 + i): 2 for i in range(1, 51)}, why
    # each datagram went through its own CHILD_SA: the peer counted 4 on each inbound SA
    peer = {s["spi"]: s["packets"] for s in section_json(sec, "traffic")["states"]}
    assert all(peer[c["spi_out"]] == 4 for c in kids), why
