# bench/scale.py (issue 13): N CHILD_SAs under one IKE_SA (lab_conf_many), real charon 5.9.8 on both
# gateways, swsim as wan. One JSON line per measurement in section "figures"; counts are what
# tests assert, durations are figures (TCG emulation inflates them).
set -e
N=${LAB_SCALE_N:-10}
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_many_up "$N"
. "$LAB_DIR/jobs/scale_steps.sh"
# traffic across the device flap on 20 children spread over the N (all of them below 20):
# LAB_FLAP_COUNT datagrams each (bench/scale.py), 0.1 s apart, from 3 s before the device goes down
FLAP_PORTS=$(awk -v n="$N" 'BEGIN{k = n < 20 ? n : 20; for (j = 0; j < k; j++) printf "%s%d", (j ? "," : ""), 5001 + int(j * n / k)}')
FLAP_COUNT=${LAB_FLAP_COUNT:-400}
scale_figures "$N" c "many/* software"
# the agent asked charon to rekey every CHILD_SA it restored: check once charon is done
ip netns exec gwa "$LAB_PY" "$LAB_DIR/jobs/initiate_many.py" --settled /run/gwa/charon.vici many "$N" 1800 >&2 ||
    lab_die "charon did not settle after the flap"
lab_agent_settled 2000
lab_check final
lab_section udp; lab_udp 5001-$((5000 + N)) 2
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; grep -E "WARNING|ERROR" /run/so.log | tail -n 20 || true
lab_section end
