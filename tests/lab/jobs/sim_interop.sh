# Issue 4, shown 1 and 2: gwa (charon + swan-offload) on the simulated packet-offload NIC,
# gwb plain software ESP on its peer end. Traffic before, during and after the move into
# "hardware"; the wire captured on gwb and decrypted with cryptography's AESGCM.
# LAB_SIM_MODE=crypto: the same with crypto offload (the kernel frames ESP, the device ciphers).
set -e
export LAB_WAN=swsim
MODE=${LAB_SIM_MODE:-packet}
. tests/lab/topology.sh
lab_up
lab_initiate net6 net6
lab_capture_start gwb
lab_section ping_sw; lab_ping 3
lab_pinger 150
LAB_AGENT_EXTRA="seq_margin = 8" lab_agent_conf "net/* software $MODE" "net6/* software $MODE"
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
lab_section devstats
ip netns exec gwa "$LAB_PY" -c 'import json; from pyroute2.ethtool.ioctl import IoctlEthtool; print(json.dumps(dict(IoctlEthtool("wan").get_statistics())))'
lab_section wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwa /run/gwb.esp
lab_section dmesg; dmesg | grep -iE "leftover|swsim|bug|warn" || true
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
# last, as it breaks the tunnel: net's outbound SA goes, its offloaded OUT policy stays (the
# agent left it on exit). A packet makes the kernel put a larval state on the device and ask
# charon (ACQUIRE), as with mlx5
ip -n gwa xfrm monitor acquire >/run/acquire.txt 2>&1 &
MON=$!
sleep 0.5
ip -n gwa xfrm state deleteall dst 192.0.2.2 proto esp
ip netns exec hosta busybox ping -c 1 -W 1 10.2.0.2 >/dev/null 2>&1 || true
sleep 0.5
kill $MON; wait $MON || true
lab_section acquire; cat /run/acquire.txt
lab_section larval; ip -n gwa xfrm state list dst 192.0.2.2
lab_section end
