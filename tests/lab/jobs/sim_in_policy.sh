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
# the device, as mlx5: a cross-family tunnel SA (IPv6 inside IPv4) in packet offload is taken
# at add time (mlx5e_xfrm_validate_state has no family check); the agent refuses it itself.
# A throwaway key, never a real SA's.
lab_section cross_family
ip -n gwa xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1001 reqid 9 mode tunnel \
    aead 'rfc4106(gcm(aes))' 0x$(printf '%040d' 0) 128 sel src fd00:1::/64 dst fd00:2::/64 \
    offload packet dev wan dir out && echo accepted
ip -n gwa xfrm state | grep -c "dev wan dir out mode packet"
lab_section end
