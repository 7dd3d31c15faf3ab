# Issue 14: mlx5 6.12's acceptance rules as swsim now follows them (tests/lab/sim/README.md),
# met through charon 5.9.8 and the agent, in one boot; the capabilities a ConnectX may lack are
# swsim's module parameters, changed between the parts (each part starts a new agent):
#   prio   prio=0: no offloaded policy may have a priority (charon's all do)
#   caps   esn=0 tunnel=0: ESN SAs refused in either mode, tunnels refused in packet mode
#   rules  every capability: the replay-window, lifetime and policy rules, and IP options
# Sections: <part> (status), <part>_traffic (UDP both ways per CHILD_SA), and in rules:
# options (datagrams with IP options over a packet-offloaded tunnel), policy (reqid-0 rule),
# tx_rule (a second OUT SA of one reqid), storm (rekeys faster than charon deletes), natt
# (status) and natt_traffic (espinudp=1).
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
M4="tun4 5101 tunnel
tun4_256 5102 tunnel
tr4 5104 transport
tr4_256 5105 transport"
R4="esnwin 5201
oldwin 5202
life 5203
opts 5204
bigwin 5205"
param() { echo "$2" >"/sys/module/swsim/parameters/$1"; }
part() {  # NAME RULE...: a new agent with these rules, its status and every child's traffic
    local name=$1; shift
    lab_agent_conf "$@"
    lab_agent_start
    lab_agent_settled
    lab_status "$name"
    lab_section "${name}_traffic"
    while read -r c port mode; do lab_udp_both "$c" "$port" "$mode"; done <<<"$M4"
    while read -r c port; do lab_udp_both "$c" "$port" tunnel; done <<<"$R4"
    kill $LAB_AGENT; wait $LAB_AGENT || true
}
fresh() {  # charon's SAs anew, in software: a part's card has never been asked about them
    lab_swanctl gwa --terminate --ike m4 --timeout 30 >/dev/null 2>&1 || true
    lab_swanctl gwa --terminate --ike r4 --timeout 30 >/dev/null 2>&1 || true
    while read -r c _rest; do lab_initiate "$c" m4; done <<<"$M4"
    while read -r c _rest; do lab_initiate "$c" r4; done <<<"$R4"
}
lab_topology
lab_charon_start gwa && lab_charon_start gwb
for ns in gwa gwb; do
    # the matrix's connection m4 and the rules' r4 (strongSwan merges included sections)
    printf 'include %s\ninclude %s\n' "$LAB_DIR/swanctl/matrix-$ns.conf" "$LAB_DIR/swanctl/rules-$ns.conf" >/run/rules-all-$ns.conf
    lab_load $ns /run/rules-all-$ns.conf
done
fresh
param prio 0
part prio "* crypto"
param prio 1; param esn 0; param tunnel 0
fresh
part caps "* crypto"
param esn 1; param tunnel 1
fresh
LAB_AGENT_EXTRA="" lab_agent_conf "r4/* software" "* crypto"
lab_agent_start
lab_agent_settled
lab_status rules
lab_section rules_traffic
while read -r c port; do lab_udp_both "$c" "$port" tunnel; done <<<"$R4"
# a rekey storm: three rekeys of oldwin 1 s apart, closer than charon's delete_rekeyed_delay (5 s),
# so up to four generations of its OUT SA live at once; the device takes one per reqid
# (tx_add_rule): each rekey's move frees the rule first (Mover.make_room), none is refused
for i in 1 2 3; do lab_swanctl gwa --rekey --child oldwin >/dev/null; sleep 1; done
sleep 7
lab_agent_settled
lab_status storm
lab_section storm_traffic
lab_udp_both oldwin 5202 tunnel
# mlx5e_ipsec_offload_ok: a packet with IPv4 options is not offloadable; in packet offload the
# kernel drops it (XfrmOutError). "opts" is in packet offload (asserted from the status)
lab_section options
before=$(ip netns exec gwa awk '$1 == "XfrmOutError" {print $2}' /proc/net/xfrm_stat)
ip netns exec hostb python3 "$LAB_DIR/jobs/udp.py" recv 5204 10 8 >/run/opts.json 2>/run/opts.err &
R=$!
for i in $(seq 1 50); do grep -q ready /run/opts.err 2>/dev/null && break; sleep 0.1; done
ip netns exec hosta python3 "$LAB_DIR/jobs/udp.py" options 10.2.0.2 5204 10
wait $R || true
after=$(ip netns exec gwa awk '$1 == "XfrmOutError" {print $2}' /proc/net/xfrm_stat)
echo "{\"received\": $(cat /run/opts.json), \"out_errors\": $((after - before))}"
# mlx5e_xfrm_validate_policy's reqid-0 rule, straight to the device (charon never installs it)
lab_section policy
ip netns exec gwa "$LAB_PY" - <<'PY'
import json
from swan_offload.backend import AddPolicy, DelPolicy, NetlinkBackend
from swan_offload.xfrm import constants as c
from swan_offload.xfrm import objects as o

b = NetlinkBackend("gwa")
off = o.Offload(b.devices()[1]["wan"].ifindex, c.XFRM_OFFLOAD_PACKET)
out = {}
for name, sel in (("catch_all", o.Selector(2, "0.0.0.0", "0.0.0.0", 0, 0)),
                  ("udp_port", o.Selector(2, "0.0.0.0", "0.0.0.0", 0, 0, dport=9, dport_mask=0xFFFF, proto=17))):
    p = o.XfrmPolicy(sel, c.XFRM_POLICY_OUT, 7, offload=off)
    (err,) = b.apply([AddPolicy(p)])
    out[name] = "accepted" if err is None else err.reason
    if err is None:
        b.apply([DelPolicy(p.id)])
print(json.dumps(out))
PY
# tx_add_rule: one packet-offloaded OUT SA per reqid and upper protocol; a second is refused
# (the agent frees the rule at a rekey: Mover.make_room). Throwaway keys, never a real SA's.
lab_section tx_rule
for spi in 0x2001 0x2002; do
    ip -n gwa xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi $spi reqid 77 mode tunnel \
        aead 'rfc4106(gcm(aes))' 0x$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n') 128 \
        offload packet dev wan dir out 2>&1 && echo added
done
for spi in 0x2001 0x2002; do ip -n gwa xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi $spi 2>/dev/null || true; done
# NAT-T on a card with MLX5_IPSEC_CAP_ESPINUDP: ESP in UDP in packet offload, transport mode only
# (the matrix's mn and r6n: encap = yes; IPv4 and IPv6). swsim frames and strips the UDP header itself; its counters
# say the device carried natt_tr's and natt_tr6's datagrams both ways.
kill $LAB_AGENT; wait $LAB_AGENT || true
param espinudp 1
lab_initiate natt_tun mn && lab_initiate natt_tr mn && lab_initiate natt_tr6 r6n
lab_agent_start
lab_agent_settled
lab_status natt
lab_section natt_traffic
lab_udp_both natt_tun 5121 tunnel
tx=$(lab_devstat gwa ipsec_packet_tx_pkts); rx=$(lab_devstat gwa ipsec_packet_rx_pkts)
lab_udp_both natt_tr 5122 transport
echo "{\"device_tx\": $(( $(lab_devstat gwa ipsec_packet_tx_pkts) - tx )), \"device_rx\": $(( $(lab_devstat gwa ipsec_packet_rx_pkts) - rx ))}"
tx=$(lab_devstat gwa ipsec_packet_tx_pkts); rx=$(lab_devstat gwa ipsec_packet_rx_pkts)
lab_udp_both natt_tr6 5123 transport6
echo "{\"device_tx\": $(( $(lab_devstat gwa ipsec_packet_tx_pkts) - tx )), \"device_rx\": $(( $(lab_devstat gwa ipsec_packet_rx_pkts) - rx ))}"
lab_check kernel
lab_section stat; ip netns exec gwa cat /proc/net/xfrm_stat
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
