# Issue 12.2 on swsim: every SA shape the project claims, one CHILD_SA each (swanctl/matrix-*.conf):
# tunnel and transport, IPv4 and IPv6, cross-family tunnels, ESN, AES-GCM 128 and 256, NAT-T.
# Each carries UDP both ways; the test compares what arrived with the mode status reports.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
# name  ike  mode  family-of-traffic  port (gateway B's side)
SHAPES="tun4 m4 tunnel 4 5101
tun4_256 m4 tunnel 4 5102
v6in4 m4 tunnel 6 5103
tr4 m4 transport 4 5104
tr4_256 m4 transport 4 5105
tun6 m6 tunnel 6 5111
tun6_256 m6 tunnel 6 5112
v4in6 m6 tunnel 4 5113
tr6 m6 transport 6 5114
tr6_256 m6 transport 6 5115
natt_tun mn tunnel 4 5121
natt_tr mn transport 4 5122"
lab_topology
lab_charon_start gwa && lab_charon_start gwb
lab_load gwa "$LAB_DIR/swanctl/matrix-gwa.conf" && lab_load gwb "$LAB_DIR/swanctl/matrix-gwb.conf"
while read -r name ike _rest; do lab_initiate "$name" "$ike"; done <<<"$SHAPES"
lab_agent_conf "* ${LAB_MATRIX_FALLBACK:-crypto}"
lab_agent_start
lab_agent_settled
lab_status status
lab_section traffic
while read -r name ike mode fam port; do
    # out: from gateway A's side to port PORT; back: from port PORT to gateway A's side
    if [ "$mode" = tunnel ]; then
        src=hosta dst=hostb; [ "$fam" = 4 ] && to=10.2.0.2 back=10.1.0.2 || { to=fd00:2::2; back=fd00:1::2; }
    else
        src=gwa dst=gwb; [ "$fam" = 4 ] && to=192.0.2.2 back=192.0.2.1 || { to=2001:db8::2; back=2001:db8::1; }
    fi
    out=$(lab_udp_between "$src" "$dst" "$to" "$port" 20 0.02 | tail -n 1)
    in=$(lab_udp_between "$dst" "$src" "$back" 6100 20 0.02 "$port" | tail -n 1)
    echo "{\"child\": \"$name\", \"out\": $out, \"in\": $in}"
done <<<"$SHAPES"
lab_check kernel
lab_section release; uname -r
lab_section state; lab_xfrm gwa state
lab_section stat; ip netns exec gwa cat /proc/net/xfrm_stat
lab_section peerstat; ip netns exec gwb cat /proc/net/xfrm_stat
lab_section devstats
ip netns exec gwa "$LAB_PY" -c 'import json; from pyroute2.ethtool.ioctl import IoctlEthtool; print(json.dumps(dict(IoctlEthtool("wan").get_statistics())))'
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
