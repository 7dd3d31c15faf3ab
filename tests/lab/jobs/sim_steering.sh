# Issue 14: mlx5 before 6.15 matches an offloaded policy's addresses exactly in its TX steering
# (swsim steer=612). Two CHILD_SAs of the matrix: tun4 (10.1.0.0/24 <-> 10.2.0.0/24, UDP 5101)
# and tr4 (transport, host addresses, UDP 5104). Sections:
#   before        status with steer=615: both in packet offload
#   leak          the agent killed, the device switched to 6.12 steering: tun4's datagrams miss
#                 the device's TX rule and leave in clear (what the agent must never let happen)
#   after         a new agent reads the device's steering (ETHTOOL_GDRVINFO): tun4 to its
#                 fallback with the reason, tr4 stays in packet
#   after_traffic UDP both ways per child, and the device's policy misses meanwhile
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
for ns in gwa gwb; do lab_load $ns "$LAB_DIR/swanctl/matrix-$ns.conf"; done
lab_initiate tun4 m4 && lab_initiate tr4 m4
lab_agent_conf "* crypto"
lab_agent_start
lab_agent_settled
lab_status before
kill -9 $LAB_AGENT; wait $LAB_AGENT 2>/dev/null || true
echo 612 >/sys/module/swsim/parameters/steer
lab_section leak
miss=$(lab_devstat gwa ipsec_tx_no_policy)
mism=$(ip netns exec gwb awk '$1 == "XfrmInTmplMismatch" {print $2}' /proc/net/xfrm_stat)
got=$(lab_udp_between hosta hostb 10.2.0.2 5101 10 0.02 | tail -n 1)
echo "{\"received\": $got, \"device_missed\": $(( $(lab_devstat gwa ipsec_tx_no_policy) - miss )),"\
     "\"peer_clear_dropped\": $(( $(ip netns exec gwb awk '$1 == "XfrmInTmplMismatch" {print $2}' /proc/net/xfrm_stat) - mism ))}"
lab_agent_start
lab_agent_settled
lab_status after
lab_section after_traffic
miss=$(lab_devstat gwa ipsec_tx_no_policy)
lab_udp_both tun4 5101 tunnel
lab_udp_both tr4 5104 transport
echo "{\"device_missed\": $(( $(lab_devstat gwa ipsec_tx_no_policy) - miss ))}"
lab_check kernel
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
