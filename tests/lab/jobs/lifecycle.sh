# Scenarios 4 (rekeys), 5 (termination) and 7 (charon restarted under the agent), one VM.
set -e
export LAB_DELETE_REKEYED_DELAY=2
. tests/lab/topology.sh
lab_up
lab_initiate fast net
lab_agent_conf "net/net crypto" "net/fast software"
lab_agent_start
lab_agent_settled
lab_check start
lab_status start_status

# 4a: swanctl --rekey with a ping running through the tunnel
lab_pinger 60
sleep 3
lab_swanctl gwa --rekey --child net >/dev/null
sleep $((LAB_DELETE_REKEYED_DELAY + 3))
lab_agent_settled
lab_check rekeyed
lab_status rekeyed_status
wait $LAB_PINGER || true
lab_section pinger; cat /run/pinger.out

# 4b: lifetime-driven rekeys of "fast" (every 8-10 s) under a UDP stream
lab_section stream; LAB_UDP_TIMES=/run/udp.times lab_udp 4000 220 0.1
lab_section stream_numbers; python3 -c '
import json
print(json.dumps(sorted({a[1] for a in json.load(open("/run/udp.times"))})))'
lab_section xfrm_stat; ip netns exec gwa cat /proc/net/xfrm_stat
lab_section xfrm_stat_b; ip netns exec gwb cat /proc/net/xfrm_stat
# the device's own drops (swsim: a frame matching an offloaded OUT policy whose SA is not on
# the device yet, or one it could not decrypt), both ends of the wire
lab_section link_drops; for ns in gwa gwb; do ip -n $ns -s -j link show wan; done | "$LAB_PY" -c '
import json, sys
rows = [json.loads(l)[0]["stats64"] for l in sys.stdin if l.strip()]
print(json.dumps({"tx_dropped": sum(r["tx"]["dropped"] for r in rows), "rx_dropped": sum(r["rx"]["dropped"] for r in rows)}))'
# what the hosts' own stacks dropped (a receive buffer overrun while the VM was starved of
# CPU: two lab VMs on two cores), so that every lost packet is counted somewhere
lab_section host_drops; for ns in hosta hostb; do ip netns exec $ns cat /proc/net/snmp; done | "$LAB_PY" -c '
import json, sys
lines = [l.split() for l in sys.stdin if l.startswith(("Udp:", "Icmp:"))]
out = {}
for head, vals in zip(lines[::2], lines[1::2]):
    for k, v in zip(head[1:], vals[1:]):
        if k in ("InErrors", "RcvbufErrors", "SndbufErrors", "InCsumErrors"):
            out[head[0] + k] = out.get(head[0] + k, 0) + int(v)
print(json.dumps(out))'
sleep $((LAB_DELETE_REKEYED_DELAY + 2))
lab_agent_settled
lab_check lifetime
lab_status lifetime_status

# 5: child termination, then IKE termination
lab_swanctl gwa --terminate --child fast --timeout 20 >/dev/null
lab_agent_settled
lab_check child_down
lab_swanctl gwa --terminate --ike net --timeout 20 >/dev/null
lab_agent_settled
lab_check ike_down
lab_status ike_down_status

# 7: charon restarted under the running agent
lab_initiate net
lab_agent_settled
lab_check restart_before
lab_charon_restart gwa
lab_section restarted; echo "charon pid $(cat /run/gwa/charon.pid)"
lab_initiate net
lab_agent_settled
lab_check restart_after
lab_status restart_status
lab_section ping; lab_ping 3 || true
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_section end
