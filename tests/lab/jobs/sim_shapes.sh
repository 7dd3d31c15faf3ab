# Issue 4 on swsim, the shapes interop does not cover: transport mode in "hardware", IPv4
# with ESN (the device authenticates the sequence number's high bits it never sends) and
# IPv6 with AES-256, UDP both ways between the gateways. gwb is plain software ESP: each
# datagram it receives is proof the device framed ESP right; each one gwa receives, that the
# device decrypted it. The wire is captured on gwb and decrypted independently.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
lab_charon_start gwa && lab_charon_start gwb
lab_load gwa "$LAB_DIR/swanctl/sim-shapes-gwa.conf" && lab_load gwb "$LAB_DIR/swanctl/sim-shapes-gwb.conf"
lab_initiate trans t4
lab_initiate trans6 t6
LAB_AGENT_EXTRA="seq_margin = 8" lab_agent_conf "t4/* software" "t6/* software"
lab_agent_start
lab_agent_settled
lab_capture_start gwb
# transport mode: the gateways are the hosts; gwb sends from port 6000, its selector's
lab_section udp4out; lab_udp_between gwa gwb 192.0.2.2 6000 50 0.02
lab_section udp4in; lab_udp_between gwb gwa 192.0.2.1 6001 50 0.02 6000
lab_section udp6out; lab_udp_between gwa gwb 2001:db8::2 6000 50 0.02
lab_section udp6in; lab_udp_between gwb gwa 2001:db8::1 6001 50 0.02 6000
sleep 1
kill $LAB_CAPTURE; wait $LAB_CAPTURE || true
lab_status status
lab_check kernel
lab_section state; lab_xfrm gwa state
lab_section peerstat; ip netns exec gwb cat /proc/net/xfrm_stat
lab_section stat; ip netns exec gwa cat /proc/net/xfrm_stat
lab_section devstats
ip netns exec gwa "$LAB_PY" -c 'import json; from pyroute2.ethtool.ioctl import IoctlEthtool; print(json.dumps(dict(IoctlEthtool("wan").get_statistics())))'
lab_section wire; "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" decrypt gwa /run/gwb.esp
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
