# Scenario 6: kill -9 of the agent in the middle of handling 50 CHILD_SAs, three times at
# different points, then a restart that runs to the end. Charon's SAs must never be lost
# or doubled; after the restart nothing of the killed runs is left; traffic on all 50.
set -e
N=50
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
lab_conf_many $N
lab_load gwa /run/many-gwa.conf && lab_load gwb /run/many-gwb.conf
lab_initiate_many $N
lab_check up
lab_section udp_before; lab_udp 5001-$((5000 + N)) 2
# moves of 4 CHILD_SAs per batch (64 shipped: one batch would decide all 50 before any kill)
LAB_AGENT_EXTRA="move_batch = 4" lab_agent_conf "many/* crypto"
for at in 3 10 25; do
    lab_agent_start
    # kill once the agent has decided $at CHILD_SAs: mid-run, most likely mid-probe
    for i in $(seq 1 600); do
        [ "$(grep -c 'many/c[0-9]*#[0-9]* reqid' /run/so.log || true)" -ge $((at + ${DONE:-0})) ] && break
        sleep 0.05
    done
    kill -9 $LAB_AGENT; wait $LAB_AGENT || true
    DONE=$(grep -c 'many/c[0-9]*#[0-9]* reqid' /run/so.log || true)
    lab_section "killed_$at"; echo "decisions logged so far: $DONE"
    lab_check "after_kill_$at"
done
lab_agent_start
lab_agent_settled 400
lab_check final
lab_status status
lab_section udp_after; lab_udp 5001-$((5000 + N)) 2
lab_check traffic gwb
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_section end
