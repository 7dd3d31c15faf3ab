# bench/scale.py --standin (issue 13): N CHILD_SAs served by the charon stand-in
# (jobs/standin.py: charon 5.9.8's kernel objects and VICI, no IKE, no peer) for N beyond what
# charon negotiates under TCG; swsim as wan. The same probes and sections as jobs/scale.sh,
# without traffic. LAB_SCALE_SHAPE: spokes (N IKE_SAs, a CHILD_SA each) or many (one IKE_SA).
set -e
N=${LAB_SCALE_N:-10}
SHAPE=${LAB_SCALE_SHAPE:-spokes}
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
mkdir -p /run/gwa
P="$LAB_PY $LAB_DIR/jobs/scale_probe.py"
ip netns exec gwa "$LAB_PY" "$LAB_DIR/jobs/standin.py" /run/gwa/charon.vici "$SHAPE" "$N" >/run/standin.out 2>&1 &
STANDIN=$!
for i in $(seq 6000); do grep -q ready /run/standin.out && break; kill -0 $STANDIN || break; sleep 0.2; done
grep ready /run/standin.out || lab_die "stand-in did not start: $(tail -n 5 /run/standin.out)"
mkdir -p "$LAB_OUT/logs" && touch /run/so.log && (tail -F /run/so.log >"$LAB_OUT/logs/agent.log" 2>/dev/null &)
[ "$SHAPE" = many ] && NAME=c || NAME=s
lab_section figures
ip netns exec gwa $P dump gwa
ip netns exec gwa $P floor gwa wan
LAB_RESYNC_SECONDS=300 lab_agent_conf "*/* software"
start=$(date +%s.%N); lab_agent_start
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"promote_s"/'
sleep 2
ip netns exec gwa $P cpu "$LAB_AGENT" 10
ip netns exec gwa $P scrape
for i in 1 2 3; do ip netns exec gwa $P event gwa "$NAME$(( (i * 7) % N + 1 ))"; sleep 1; done
sleep 6  # the stand-in deletes the rekeyed SAs 5 s later, as charon does: not the restart's writes
kill $LAB_AGENT; wait $LAB_AGENT || true
ip netns exec gwa $P writes gwa 30 2>/run/writes.err >/run/writes.out &
W=$!
for i in $(seq 100); do grep -q ready /run/writes.err 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N); lab_agent_start
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"restart_s"/'
wait $W; cat /run/writes.out
start=$(date +%s.%N); ip -n gwa link set wan down
ip netns exec gwa $P restore gwa "$start"
sleep 2
ip -n gwa link set wan up
ip -n gwa route replace 10.2.0.0/24 via 192.0.2.2
start=$(date +%s.%N)
ip netns exec gwa $P decided "$N" "$start" | sed 's/"seconds"/"reoffload_s"/'
# the rekeys the agent asked for after the restore: the kernel is checked once the stand-in
# has deleted every rekeyed CHILD_SA's SAs, as charon does 5 s after each rekey
for i in $(seq 900); do
    ip netns exec gwa "$LAB_PY" -c 'import socket, sys, vici
s = socket.socket(socket.AF_UNIX); s.connect("/run/gwa/charon.vici")
sys.exit(int(vici.Session(s).request("standin-pending")["pending"]) != 0)' && break
    sleep 1
done
lab_agent_settled 2000
lab_check final
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section standin; cat /run/standin.out
lab_section log; grep -E "WARNING|ERROR" /run/so.log | tail -n 20 || true
lab_section end
