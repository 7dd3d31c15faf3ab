# Issue 4, shown 6: strongSwan 6.0.1 (Debian trixie, from the chroot) with native
# `hw_offload = packet` on gwa's sim device, gwb plain 5.9.8 software. What the kernel holds
# and what charon reports, for docs/native-6.0.1-comparison.md; then swan-offload started
# beside it, which must see the SAs as native and leave them alone.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
ROOT=$(cd "$LAB_DIR/../.." && pwd)/.lab/chroot-trixie
[ -x "$ROOT/usr/lib/ipsec/charon" ] || lab_die "no strongSwan in $ROOT: tests/lab/sim/build.sh"
LAB_CHARON_ROOT=$ROOT LAB_CHARON_LOAD="random nonce openssl x509 pubkey pkcs1 pem kernel-netlink socket-default vici updown" \
    lab_charon_start gwa
lab_charon_start gwb
# every child of gwa's usual file, with native packet offload
sed 's/^\( *\)esp_proposals = aes128gcm16$/&\n\1hw_offload = packet/' "$LAB_DIR/swanctl/gwa.conf" >/run/native-gwa.conf
lab_load gwa /run/native-gwa.conf
lab_load gwb
lab_initiate net
lab_initiate net6 net6
lab_section version; lab_swanctl gwa --version --daemon
lab_section ping; lab_ping 3
lab_section ping6; lab_ping 3 fd00:2::2 || true
lab_section udp; lab_udp 4000 50 0.02
lab_check kernel
lab_check peer gwb
lab_section state; lab_xfrm gwa state
lab_section policy; lab_xfrm gwa policy
lab_section listsas; lab_swanctl gwa --list-sas
lab_section charonlog; grep -iE "offload|bypass|error|fail" /run/gwa/charon.log || true
lab_agent_conf "net/* software" "net6/* software"
lab_agent_start
lab_agent_settled
lab_status agent_status
lab_section agent_table; "$LAB_SO" -c /run/so.toml status
lab_check after
kill $LAB_AGENT; wait $LAB_AGENT || true
lab_section log; cat /run/so.log
lab_nokeys
lab_section end
