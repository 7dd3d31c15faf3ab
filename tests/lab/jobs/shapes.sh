# Scenarios 3 and 8: transport mode, IPv6 tunnel, two CHILD_SAs under one IKE_SA, ESN;
# the plan printed before the daemon starts, then what the daemon did.
set -e
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
lab_load gwa "$LAB_DIR/swanctl/shapes-gwa.conf" && lab_load gwb "$LAB_DIR/swanctl/shapes-gwb.conf"
for c in icmp udp trans; do lab_initiate $c multi; done
lab_initiate net6 net6
lab_agent_conf "multi/icmp crypto" "multi/udp software" "multi/trans software" "net6/* keep"
lab_check before
lab_section plan; "$LAB_SO" -c /run/so.toml --netns gwa plan --json
lab_agent_start
lab_agent_settled
lab_status status
lab_section table; "$LAB_SO" -c /run/so.toml status
lab_section ping; lab_ping 3 || true
lab_section udp; lab_udp 4000 5
lab_section pingtrans; ip netns exec gwa busybox ping -c 3 -w 10 192.0.2.2 || true
lab_section ping6; lab_ping 3 fd00:2::2 || true
lab_check kernel
lab_check peer gwb
lab_section ipstate; lab_xfrm gwa state
lab_section ippolicy; lab_xfrm gwa policy
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
