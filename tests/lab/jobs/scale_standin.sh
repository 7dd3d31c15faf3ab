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
ip netns exec gwa "$LAB_PY" "$LAB_DIR/jobs/standin.py" /run/gwa/charon.vici "$SHAPE" "$N" >/run/standin.out 2>&1 &
STANDIN=$!
for i in $(seq 6000); do grep -q ready /run/standin.out && break; kill -0 $STANDIN || break; sleep 0.2; done
grep ready /run/standin.out || lab_die "stand-in did not start: $(tail -n 5 /run/standin.out)"
[ "$SHAPE" = many ] && NAME=c || NAME=s
. "$LAB_DIR/jobs/scale_steps.sh"
scale_figures "$N" "$NAME" "*/* software"
# the agent asks a rekey of each CHILD_SA it restored (N, after the 3 events): the kernel is
# checked once the stand-in has done them and deleted every rekeyed CHILD_SA's SAs, as charon
# does 5 s after each rekey
for i in $(seq 900); do
    ip netns exec gwa "$LAB_PY" - "$N" <<'PY' && break
import socket, sys, vici
s = socket.socket(socket.AF_UNIX)
s.connect("/run/gwa/charon.vici")
r = vici.Session(s).request("standin-pending")
sys.exit(not (int(r["pending"]) == 0 and int(r["rekeys"]) >= int(sys.argv[1]) + 3))
PY
    sleep 1
done
lab_agent_settled 2000
lab_check final
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section standin; cat /run/standin.out
lab_section log; grep -E "WARNING|ERROR" /run/so.log | tail -n 20 || true
lab_section end
