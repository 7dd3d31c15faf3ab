# Issue 12.1 on swsim: the offloaded IKE bypasses cover gateway A's own IKE traffic only.
# A protected host's UDP from or to port 500/4500 goes through the tunnel (ESP on the wire),
# a clear datagram from the remote subnet to port 4500 of gateway A's LAN address is dropped,
# and IKE (charon on custom ports 5500/5501; 5501 learned from the IKE_SAs) still works, rekeys included.
# LAB_SCOPE_NATIVE=1: the same traffic with strongSwan 6.0.1's native hw_offload = packet on
# gateway A instead (docs/native-6.0.1-comparison.md).
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
if [ "${LAB_SCOPE_NATIVE:-}" = 1 ]; then
    LAB_CHARON_ROOT=$(cd "$LAB_DIR/../.." && pwd)/.lab/chroot-trixie LAB_CHARON_EXTRA="port = 5500
    port_nat_t = 5501" LAB_CHARON_LOAD="random nonce openssl x509 pubkey pkcs1 pem kernel-netlink socket-default vici updown" \
        lab_charon_start gwa
    sed 's/^\( *\)esp_proposals = aes128gcm16$/&\n\1hw_offload = packet/' "$LAB_DIR/swanctl/scope-gwa.conf" >/run/scope-native-gwa.conf
    lab_load gwa /run/scope-native-gwa.conf
else
    LAB_CHARON_EXTRA="port = 5500
    port_nat_t = 5501" lab_charon_start gwa
    lab_load gwa "$LAB_DIR/swanctl/scope-gwa.conf"
fi
lab_charon_start gwb
lab_load gwb "$LAB_DIR/swanctl/scope-gwb.conf"
lab_initiate net scope
lab_initiate net6 scope6
if [ "${LAB_SCOPE_NATIVE:-}" != 1 ]; then
    lab_agent_conf "* software"
    lab_agent_start
    lab_agent_settled
fi
lab_capture_start gwb
lab_section peerstat_before; ip netns exec gwb cat /proc/net/xfrm_stat
# protected hosts, IKE and NAT-T ports: from 4500 / 500, to 4500 / 500, IPv4 and IPv6, both ways
lab_section from4500; lab_udp_between hosta hostb 10.2.0.2 7000 10 0.05 4500
lab_section from500; lab_udp_between hosta hostb 10.2.0.2 7001 10 0.05 500
lab_section to4500; lab_udp_between hosta hostb 10.2.0.2 4500 10 0.05 7002
lab_section to500; lab_udp_between hosta hostb 10.2.0.2 500 10 0.05 7003
lab_section from4500v6; lab_udp_between hosta hostb fd00:2::2 7004 10 0.05 4500
lab_section back4500; lab_udp_between hostb hosta 10.1.0.2 7005 10 0.05 4500
# and from charon's own NAT-T port (5501 here): native 6.0.1's bypass has exactly that port
lab_section from5501; lab_udp_between hosta hostb 10.2.0.2 7008 10 0.05 5501
# clear from the wire: the remote subnet's address to gateway A's LAN address, port 4500
# (dropped: the tunnel's IN policy requires ESP), then from gwb's WAN address (no policy
# covers it: delivered, proving the injected datagrams reach gateway A at all)
lab_section stat_before; ip netns exec gwa cat /proc/net/xfrm_stat
lab_section clear_lan
ip netns exec gwa python3 "$LAB_DIR/jobs/udp.py" recv 4500 10 6 >/run/clear.out 2>/run/clear.err &
rx=$!; sleep 1
ip netns exec gwb python3 "$LAB_DIR/jobs/udp.py" clear 10.2.0.1 10.1.0.1 4500 10
wait $rx; cat /run/clear.out
lab_section clear_control
ip netns exec gwa python3 "$LAB_DIR/jobs/udp.py" recv 4500 10 6 >/run/clear.out 2>/run/clear.err &
rx=$!; sleep 1
ip netns exec gwb python3 "$LAB_DIR/jobs/udp.py" clear 192.0.2.2 10.1.0.1 4500 10
wait $rx; cat /run/clear.out
lab_section stat; ip netns exec gwa cat /proc/net/xfrm_stat
# IKE over the bypasses: IKE rekeys from both sides and a CHILD_SA rekey, then traffic again
"$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" keys gwa /run/scope-keys.json  # the rekeys retire these SAs
lab_section ike
lab_swanctl gwb --rekey --ike scope >/dev/null && sleep 3
lab_swanctl gwa --rekey --ike scope >/dev/null && sleep 3
lab_swanctl gwb --rekey --child net >/dev/null && sleep 4
lab_swanctl gwa --list-sas --ike scope
lab_section after; lab_udp_between hosta hostb 10.2.0.2 7006 10 0.05 4500
sleep 1
kill $LAB_CAPTURE; wait $LAB_CAPTURE || true
lab_section peerstat; ip netns exec gwb cat /proc/net/xfrm_stat
if [ "${LAB_SCOPE_NATIVE:-}" != 1 ]; then
    lab_agent_settled
    lab_status status
    lab_check kernel
fi
lab_section policy; lab_xfrm gwa policy
lab_section wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwa /run/gwb.esp /run/scope-keys.json
lab_section log; cat /run/so.log 2>/dev/null || true
lab_nokeys
lab_section end
