# bench/scale.py (issue 13): N CHILD_SAs under one IKE_SA (lab_conf_many), real charon 5.9.8 on both
# gateways, swsim as wan. One JSON line per measurement in section "figures"; counts are what
# tests assert, durations are figures (TCG emulation inflates them).
set -e
N=${LAB_SCALE_N:-10}
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
lab_conf_many "$N"
lab_load gwa /run/many-gwa.conf && lab_load gwb /run/many-gwb.conf
lab_initiate_many "$N"
P="$LAB_PY $LAB_DIR/jobs/scale_probe.py"
# the agent's log reaches the host as it is written: a run killed at its timeout still has it
mkdir -p "$LAB_OUT/logs" && touch /run/so.log && (tail -F /run/so.log >"$LAB_OUT/logs/agent.log" 2>/dev/null &)
lab_section figures
ip netns exec gwa $P dump gwa
ip netns exec gwa $P floor gwa wan
# the agent on software SAs: start -> all N in packet offload
LAB_RESYNC_SECONDS=300 lab_agent_conf "many/* software"  # the shipped idle resync, as an operator runs it
start=$(date +%s.%N); lab_agent_start
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"promote_s"/'
lab_agent_settled 2000
sleep 2
ip netns exec gwa $P cpu "$LAB_AGENT" 10
ip netns exec gwa $P scrape
# one CHILD_SA rekeyed at N: charon's new SAs -> offloaded, three times
for i in 1 2 3; do ip netns exec gwa $P event gwa "c$(( (i * 7) % N + 1 ))"; sleep 1; done
# restart with everything offloaded: kernel writes while the new agent settles
kill $LAB_AGENT; wait $LAB_AGENT || true
ip netns exec gwa $P writes gwa 30 2>/run/writes.err >/run/writes.out &
W=$!
for i in $(seq 100); do grep -q ready /run/writes.err 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N); lab_agent_start
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"restart_s"/'
wait $W; cat /run/writes.out
# device down/up at N: every SA back in software, then in packet offload again
start=$(date +%s.%N); ip -n gwa link set wan down
ip netns exec gwa $P restore gwa "$start"
sleep 2
ip -n gwa link set wan up
ip -n gwa route replace 10.2.0.0/24 via 192.0.2.2  # as the network configuration would
start=$(date +%s.%N)
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"reoffload_s"/'
lab_check final
lab_section udp; lab_udp 5001-$((5000 + N)) 2
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; grep -E "WARNING|ERROR" /run/so.log | tail -n 20 || true
lab_section end
