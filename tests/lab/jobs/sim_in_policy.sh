# Issue 12, found on the way: kernel 6.12 accepts a clear datagram that matches a
# packet-offloaded IN policy requiring ESP, where the same policy in software drops it
# (XfrmInTmplMismatch). No charon, no agent: one policy added by hand on swsim's wan.
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
clear_to_lan() {
    ip netns exec gwa python3 "$LAB_DIR/jobs/udp.py" recv 4500 5 4 2>/dev/null & local rx=$!
    sleep 1
    ip netns exec gwb python3 "$LAB_DIR/jobs/udp.py" clear 10.2.0.1 10.1.0.1 4500 5
    wait $rx
    ip netns exec gwa grep XfrmInTmplMismatch /proc/net/xfrm_stat
}
pol="src 10.2.0.0/24 dst 10.1.0.0/24 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 1 mode tunnel"
ip -n gwa xfrm policy add $pol
lab_section software; clear_to_lan
ip -n gwa xfrm policy del src 10.2.0.0/24 dst 10.1.0.0/24 dir in
ip -n gwa xfrm policy add $pol offload packet dev wan
lab_section packet; ip -n gwa xfrm policy | grep -c "mode packet"; clear_to_lan
lab_section end
