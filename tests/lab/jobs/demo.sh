# Run inside the lab VM by scripts/demo.sh.
set -e
. tests/lab/topology.sh
lab_up >/dev/null
lab_initiate net6 net6 >/dev/null
SO=.venv/bin/swan-offload
printf '[vici]\nsocket = "/run/gwa/charon.vici"\n[agent]\nstatus_file = "/run/so-status.json"\n' > /tmp/so.toml
echo "### charon on gateway A"; lab_swanctl gwa --list-sas | grep -E "^[a-z0-9]+: #|reqid"
echo "### swan-offload plan"; $SO -c /tmp/so.toml --netns gwa plan
ip netns exec gwa $SO -c /tmp/so.toml run > /run/so.log 2>&1 &
for i in $(seq 1 60); do [ -f /run/so-status.json ] && grep -q '"mode": "software\|"mode": "crypto\|"mode": "packet' /run/so-status.json && break; sleep 0.5; done
sleep 2
echo "### swan-offload status"; $SO -c /tmp/so.toml status
echo "### traffic through the tunnel"; lab_ping 3
echo "### kernel (iproute2 6.15)"; ip -n gwa -d xfrm state | grep -E "^src|offload|reqid" ; ip -n gwa xfrm policy | grep -E "^src|dir|offload"
echo "### agent log"; cat /run/so.log
kill %1 2>/dev/null || true
