# Issue 5: a real Prometheus server (Debian's package) scrapes the agent on gwa; its HTTP query
# API must return the per-SA series with the values the kernel reports. swsim: the SAs run in
# the simulated device, whose counters the kernel refreshes when a state is read.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_up
lab_agent_conf "net/* software"
lab_agent_start
lab_agent_settled
lab_section ping; lab_ping 10
cat >/run/prom.yml <<'YML'
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: swan-offload
    static_configs:
      - targets: ["127.0.0.1:9814"]
YML
# in gwa's namespace, where the agent listens on its default 127.0.0.1:9814
ip netns exec gwa prometheus --config.file=/run/prom.yml --storage.tsdb.path=/run/prom-data \
    --web.listen-address=127.0.0.1:9090 >/run/prom.log 2>&1 &
PROM=$!
lab_section query
ip netns exec gwa "$LAB_PY" - <<'PY'
import json, sys, time, urllib.parse, urllib.request
sys.path.insert(0, "tests/lab/jobs")
from swan_offload.backend import NetlinkBackend

API = "http://127.0.0.1:9090/api/v1/query?query="

def query(q):
    with urllib.request.urlopen(API + urllib.parse.quote(q), timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]

deadline = time.monotonic() + 120
while True:  # Prometheus up, and two scrapes since the traffic stopped
    try:
        up = query('up{job="swan-offload"}')
        if up and up[0]["value"][1] == "1" and float(query("count_over_time(up{job=\"swan-offload\"}[3s])")[0]["value"][1]) >= 2:
            break
    except (OSError, IndexError, KeyError):
        pass
    if time.monotonic() > deadline:
        sys.exit("prometheus never scraped the agent: " + open("/run/prom.log").read()[-2000:])
    time.sleep(1)
time.sleep(2.5)
kernel = [{"spi": f"{s.spi:08x}", "bytes": s.curlft.bytes, "packets": s.curlft.packets,
           "offload": "packet" if s.offload and s.offload.packet else None}
          for s in NetlinkBackend().dump_states() if s.reqid]
out = {n: query(n) for n in ("swan_offload_sa_bytes_total", "swan_offload_sa_packets_total", "swan_offload_sa_info",
                             'swan_offload_sa_offload == 1', "swan_offload_xfrm_errors_total", "swan_offload_vici_connected")}
print(json.dumps({"kernel": kernel, "prom": out}))
PY
kill $PROM; wait $PROM || true
lab_section promlog; tail -n 5 /run/prom.log
kill $LAB_AGENT; wait $LAB_AGENT || true
