"""Smoke test of the lab: one VM, two charons, a tunnel, 5/5 pings through it, kernel ESP
states with the CHILD_SA's reqid whose counters move (read with iproute2 >= 6.15)."""

import re

import pytest

pytestmark = pytest.mark.lab

JOB = r"""
set -e
. tests/lab/topology.sh
ip -V
lab_up
echo "== sas"; lab_swanctl gwa --list-sas
echo "== before"; lab_xfrm gwa state
echo "== ping"; lab_ping 5 || true
echo "== after"; lab_xfrm gwa state
echo "== end"
"""


def sections(out: str) -> dict[str, str]:
    parts = re.split(r"^== (\w+)$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def esp_states(text: str) -> dict[str, dict]:
    """SPI -> {reqid, bytes, packets, text} from `ip -s -d xfrm state`."""
    states = {}
    for block in re.split(r"^(?=src )", text, flags=re.M):
        m = re.search(r"proto esp spi (0x[0-9a-f]+).*? reqid (\d+)", block)
        cur = re.search(r"lifetime current:\s+(\d+)\(bytes\), (\d+)\(packets\)", block)
        if m and cur:
            states[m[1]] = {"reqid": int(m[2]), "bytes": int(cur[1]), "packets": int(cur[2]), "text": block}
    return states


def test_tunnel_pings_and_counts(lab_run_job):
    res = lab_run_job(JOB, timeout=300)
    detail = f"rc={res.rc}\n--stdout--\n{res.stdout}\n--stderr--\n{res.stderr}\n--logs--\n" + "\n".join(
        f"# {k}\n{v[-3000:]}" for k, v in res.logs.items()
    )
    assert res.rc == 0, detail
    assert re.search(r"iproute2-6\.(1[5-9]|[2-9]\d)", res.stdout), "iproute2 >= 6.15 expected\n" + detail

    sec = sections(res.stdout)
    assert "5 packets transmitted, 5 packets received" in sec["ping"], detail
    reqid = int(re.search(r"net: #\d+, reqid (\d+), INSTALLED, TUNNEL, ESP:AES_GCM_16-128", sec["sas"])[1])

    before, after = esp_states(sec["before"]), esp_states(sec["after"])
    assert len(after) == 2, detail
    assert {s["reqid"] for s in after.values()} == {reqid}, detail
    assert set(before) == set(after), detail
    for spi, st in after.items():
        assert "aead rfc4106(gcm(aes))" in st["text"], st["text"]
        assert st["packets"] >= before[spi]["packets"] + 5, f"{spi}: {before[spi]} -> {st}"
        assert st["bytes"] > before[spi]["bytes"], f"{spi}: {before[spi]} -> {st}"
    print(f"lab VM job: {res.seconds:.1f} s")
