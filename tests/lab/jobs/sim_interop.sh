# Issue 4, shown 1 and 2: gwa (charon + swan-offload) on the simulated packet-offload NIC,
# gwb plain software ESP on its peer end. Traffic before, during and after the move into
# "hardware"; the wire captured on gwb and decrypted with cryptography's AESGCM.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_up
lab_initiate net6 net6
lab_capture_start gwb
lab_section ping_sw; lab_ping 3
lab_pinger 150
LAB_AGENT_EXTRA="seq_margin = 8" lab_agent_conf "net/* software" "net6/* software"
lab_agent_start
lab_agent_settled
wait $LAB_PINGER || true
lab_section pinger; cat /run/pinger.out
lab_section udp; lab_udp 4000 100 0.02
lab_section ping6; lab_ping 3 fd00:2::2 || true
sleep 1
kill $LAB_CAPTURE; wait $LAB_CAPTURE || true
lab_status status
lab_check kernel
lab_section state; lab_xfrm gwa state
lab_section policy; lab_xfrm gwa policy
lab_section peerstate; lab_xfrm gwb state
lab_section peerstat; ip netns exec gwb cat /proc/net/xfrm_stat
lab_section wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwa /run/gwb.esp
lab_section dmesg; dmesg | grep -iE "leftover|swsim|bug|warn" || true
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
