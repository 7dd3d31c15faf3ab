# The measurements of bench/scale.py once N CHILD_SAs are up in software, for jobs/scale.sh
# (real charon) and jobs/scale_standin.sh (the stand-in); sourced after topology.sh.
# scale_figures N NAME RULE: section "figures", one JSON line per measurement (scale_probe.py);
# NAME: the CHILD_SA names' prefix (c1..cN or s1..sN), RULE: the agent's rule for them.
P="$LAB_PY $LAB_DIR/jobs/scale_probe.py"
scale_figures() {
    local n=$1 name=$2 rule=$3 start i W
    # the agent's log reaches the host as it is written: a run killed at its timeout still has it
    mkdir -p "$LAB_OUT/logs" && touch /run/so.log && (tail -F /run/so.log >"$LAB_OUT/logs/agent.log" 2>/dev/null &)
    lab_section figures
    ip netns exec gwa $P dump gwa
    ip netns exec gwa $P floor gwa wan
    # the agent on software SAs: start -> all N in packet offload
    LAB_RESYNC_SECONDS=300 LAB_RESYNC_SHARE=0.01 lab_agent_conf "$rule"  # the shipped idle resync, as an operator runs it
    start=$(date +%s.%N); lab_agent_start
    ip netns exec gwa $P decided "$n" "$start" | sed 's/"seconds"/"promote_s"/'
    lab_agent_settled 2000
    sleep 2
    echo "# $(date +%T) idle"  # marks for the sampler's windows (bench/scale.py --profile)
    ip netns exec gwa $P cpu "$LAB_AGENT" 10
    ip netns exec gwa $P scrape
    # one CHILD_SA rekeyed at N: charon's new SAs -> offloaded, three times
    for i in 1 2 3; do ip netns exec gwa $P event gwa "$name$(( (i * 7) % n + 1 ))"; sleep 1; done
    sleep 6  # charon deletes a rekeyed CHILD_SA's SAs 5 s later: not the restart's writes
    # restart with everything offloaded: kernel writes while the new agent settles
    kill $LAB_AGENT; wait $LAB_AGENT || true
    ip netns exec gwa $P writes gwa 30 2>/run/writes.err >/run/writes.out &
    W=$!
    for i in $(seq 100); do grep -q ready /run/writes.err 2>/dev/null && break; sleep 0.1; done
    start=$(date +%s.%N); lab_agent_start
    ip netns exec gwa $P decided "$n" "$start" | sed 's/"seconds"/"restart_s"/'
    wait $W; cat /run/writes.out
    # device down/up at N: every SA back in software, then in packet offload again
    [ -z "${FLAP_PORTS:-}" ] || flap_traffic_start
    echo "# $(date +%T) restore"
    ip netns exec gwa $P restore gwa wan  # it takes wan down
    sleep 2
    ip -n gwa link set wan up
    ip -n gwa route replace 10.2.0.0/24 via 192.0.2.2  # as the network configuration would
    start=$(date +%s.%N)
    ip netns exec gwa $P decided "$n" "$start" | sed 's/"seconds"/"reoffload_s"/'
    [ -z "${FLAP_PORTS:-}" ] || flap_traffic_end
}

# With a peer (real charon): UDP on FLAP_PORTS (a sample of the children) across the flap,
# ESP captured on gwb's wire and decrypted there with the keys gwa held before the flap and
# those gwb holds after: sections flap_udp ({"port": received}) and flap_wire (esp_wire.py).
flap_traffic_start() {
    "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" keys gwa /run/keys.flap
    lab_capture_start gwb
    lab_udp "$FLAP_PORTS" "$FLAP_COUNT" 0.1 >/run/flap.udp &
    FLAP_UDP=$!
    sleep 3
}

flap_traffic_end() {
    wait $FLAP_UDP
    sleep 1
    kill $LAB_CAPTURE; wait $LAB_CAPTURE || true
    lab_section flap_udp; cat /run/flap.udp
    lab_section flap_wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwb /run/gwb.esp /run/keys.flap
}
