# Issue 4, shown 4: the sim device refuses, the children end in their fallbacks with its reason,
# traffic keeps flowing. "net" is negotiated with aes256-sha256 (CBC + HMAC: no ConnectX takes
# it); "net6" stays AES-GCM but the device holds one SA only (max_sa=1), so its move fails
# half-way in the kernel itself and must be undone.
set -e
export LAB_WAN=swsim LAB_SIM_ARGS="max_sa=1"
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
for ns in gwa gwb; do
    # the first child of the file ("net") only
    sed '0,/esp_proposals = aes128gcm16/s//esp_proposals = aes256-sha256/' "$LAB_DIR/swanctl/$ns.conf" >/run/cbc-$ns.conf
    lab_load $ns /run/cbc-$ns.conf
done
lab_initiate net
lab_initiate net6 net6
lab_pinger 100
lab_agent_conf "net/* crypto" "net6/* software"
lab_agent_start
lab_agent_settled
wait $LAB_PINGER || true
lab_section pinger; cat /run/pinger.out
lab_section ping6; lab_ping 3 fd00:2::2 || true
lab_section udp; lab_udp 4000 20 0.02
lab_status status
lab_check kernel
lab_check peer gwb
lab_section state; lab_xfrm gwa state
lab_section dmesg; dmesg | grep -iE "leftover|swsim|bug|warn" || true
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
