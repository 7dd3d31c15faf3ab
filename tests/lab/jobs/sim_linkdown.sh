# Issue 4, shown 5: the offload device goes down and comes back under a UDP stream.
# The kernel drops the SAs and policies offloaded to wan without a word; the agent must put
# the SAs back in software from its own copy, ask charon to rekey them, and offload again
# once wan is up. Times are CLOCK_BOOTTIME seconds, as udp.py stamps arrivals.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
now() { cut -d' ' -f1 /proc/uptime; }
lab_up
lab_capture_start gwb
LAB_AGENT_EXTRA="seq_margin = 8" lab_agent_conf "net/* software"
lab_agent_start
lab_agent_settled
lab_status before
"$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" keys gwa /run/keys.before
# 800 datagrams, 50 ms apart: 40 s of stream; the device down from about 4 s, for 13 s: up
# after charon's second retransmit of the rekey (4 + 7.2 s), so the stream resumes on the SAs
# restored from the agent's copy, with estimated sequence numbers, until the third (24 s)
LAB_UDP_TIMES=/run/udp.times lab_udp 4000 800 0.05 >/run/udp.json &
UDP=$!
sleep 4
t_down=$(now); ip -n gwa link set wan down
sleep 1
# read while down; wan stays down while these run (at least 13 s)
lab_status down_status
lab_section down; "$LAB_PY" "$LAB_DIR/jobs/check.py" gwa --once
sleep "$(awk "BEGIN{d = $t_down + 13 - $(now); print (d > 0 ? d : 0)}")"
t_up=$(now); ip -n gwa link set wan up
# what the network configuration would do: routes via the link come back with it
ip -n gwa route replace 10.2.0.0/24 via 192.0.2.2
wait $UDP
lab_section udp; cat /run/udp.json
# after the agent's rekey request: a new CHILD_SA, offloaded again
for i in $(seq 1 60); do
    "$LAB_SO" -c /run/so.toml status --json | grep -q '"mode": "packet"' && break; sleep 0.5
done
lab_agent_settled
lab_status after_status
lab_check after
lab_section ping; lab_ping 3
sleep 1
kill $LAB_CAPTURE; wait $LAB_CAPTURE || true
lab_section outage
"$LAB_PY" - "$t_down" "$t_up" <<'PY'
import json, sys
down, up = map(float, sys.argv[1:])
arr = sorted(json.load(open("/run/udp.times")), key=lambda a: a[2])
before = [a for a in arr if a[2] < down]
after = [a for a in arr if a[2] > up]
gaps = sorted(((b[2] - a[2], a[1], b[1]) for a, b in zip(arr, arr[1:])), reverse=True)
longest = gaps[0]
print(json.dumps({"received": len(arr), "down_seconds": round(up - down, 3),
                  "last_before_down": round(down - before[-1][2], 3) if before else None,
                  "first_after_up": round(after[0][2] - up, 3) if after else None,
                  "longest_gap": round(longest[0], 3), "gap_between": longest[1:],
                  "second_gap": round(gaps[1][0], 3)}))
PY
lab_section peerstat; ip netns exec gwb cat /proc/net/xfrm_stat
lab_section wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwb /run/gwb.esp /run/keys.before
lab_section dmesg; dmesg | grep -iE "leftover|swsim|bug|warn" || true
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_section charon; grep -iE "rekey|roam|mobike|path|retransmit|CHILD_SA" /run/gwa/charon.log | tail -40 || true
lab_nokeys
lab_section end
