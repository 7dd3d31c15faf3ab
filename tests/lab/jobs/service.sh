# The main demo, and issue 5's service test: what an operator installs, run as they would.
# Boots with systemd as PID 1 (vm.py init="systemd"). Gateway A runs charon 5.9.8 with the
# shipped conf/swanctl.conf on the simulated packet-offload NIC, gateway B its peer
# (tests/lab/swanctl/example-gwb.conf) in plain software; swan-offload is the shipped
# conf/swan-offload.service with conf/swan-offload.toml, started by systemd. The lab's drop-in
# changes only what the lab must: the command's path (this checkout's venv), the network
# namespace (gateway A's) and the checkout made visible inside the sandbox.
set -e
export LAB_WAN=swsim
. tests/lab/topology.sh
[ "$(cat /proc/1/comm)" = systemd ] || lab_die "PID 1 is not systemd: run with init=systemd"
say() { printf '\n### %s\n' "$*"; }
unit_show() { systemctl show swan-offload -p ActiveState -p SubState -p Result -p MainPID -p NRestarts -p StatusText; }

lab_topology
lab_charon_start gwa
lab_charon_start gwb
lab_load gwb "$LAB_DIR/swanctl/example-gwb.conf"
lab_load gwa "$LAB_REPO/conf/swanctl.conf"  # start_action = start: loading it brings the tunnel up
for i in $(seq 1 100); do lab_swanctl gwa --list-sas 2>/dev/null | grep -q "lan: .*INSTALLED" && break; sleep 0.3; done
lab_section charon; say "charon 5.9.8 on gateway A, with conf/swanctl.conf"
lab_swanctl gwa --list-sas | grep -E "^[a-z0-9-]+: #|lan: |in  |out |local |remote "

case "$(readlink -f "$LAB_REPO/.venv/bin/python")" in
    /root/*|/home/*) lab_die "the venv's python, $(readlink -f "$LAB_REPO/.venv/bin/python"), is in a home directory, which the unit's ProtectHome= hides: make .venv from /usr/bin/python3 (scripts/setup.sh does)" ;;
esac
install -Dm644 conf/swan-offload.toml /etc/swan-offload/swan-offload.toml
sed -i 's|^socket = .*|socket = "/run/gwa/charon.vici"|' /etc/swan-offload/swan-offload.toml
install -m644 conf/swan-offload.service /etc/systemd/system/swan-offload.service
mkdir -p /etc/systemd/system/swan-offload.service.d
cat >/etc/systemd/system/swan-offload.service.d/lab.conf <<EOF
[Service]
ExecStart=
ExecStart=$LAB_REPO/.venv/bin/swan-offload -c /etc/swan-offload/swan-offload.toml run
NetworkNamespacePath=/run/netns/gwa
BindReadOnlyPaths=$LAB_REPO
EOF
systemctl daemon-reload
lab_section start; say "systemctl start swan-offload (Type=notify: returns once the first reconcile is done)"
t0=$(date +%s.%N)
systemctl start swan-offload || {
    systemctl status --no-pager -l swan-offload || true
    journalctl -u swan-offload --no-pager -o cat || true
    lab_die "swan-offload.service did not start"
}
echo "started in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s"
unit_show
PID=$(systemctl show -p MainPID --value swan-offload)
lab_section proc; say "the daemon's process: capabilities, seccomp, network namespace"
grep -E "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):" "/proc/$PID/status"
echo "netns: $(stat -L -c %i "/proc/$PID/ns/net") gwa: $(stat -L -c %i /run/netns/gwa)"
lab_section socket; stat -c '%A %U %n' /run/swan-offload/control.sock

lab_section table; say "swan-offload status"; "$LAB_SO" status
lab_section status; "$LAB_SO" status --json
lab_section ping; say "traffic between the subnets, through the NIC"; lab_ping 5
lab_section state; say "ip -s -d xfrm state on gateway A (keys redacted)"; lab_xfrm gwa state
lab_section policy; say "ip xfrm policy on gateway A"; ip -n gwa xfrm policy
lab_section metrics; say "metrics on 127.0.0.1:9814 (gateway A's namespace)"
ip netns exec gwa "$LAB_PY" -c '
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9814/metrics", timeout=5).read().decode()
want = ("swan_offload_decisions_total", "swan_offload_sa_offload", "swan_offload_sa_packets_total", "swan_offload_vici_connected")
print("\n".join(line for line in text.splitlines() if line.startswith(want)))
'

lab_section restart; say "kill -9 of the daemon: systemd restarts it (Restart=on-failure), nothing lost"
kill -9 "$PID"
for i in $(seq 1 300); do  # RestartSec=2s, then a start as long as the first (TCG: up to ~20 s cold)
    [ "$(systemctl show -p NRestarts --value swan-offload)" -ge 1 ] && [ "$(systemctl show -p ActiveState --value swan-offload)" = active ] && break
    sleep 0.2
done
unit_show
lab_section restarted; "$LAB_SO" status --json
lab_section restarted_table; "$LAB_SO" status
lab_section ping2; lab_ping 5

lab_section stop; say "systemctl stop swan-offload: the kernel keeps what it holds"
systemctl stop swan-offload
unit_show
lab_section ping3; lab_ping 3
lab_section kernel; "$LAB_PY" "$LAB_DIR/jobs/check.py" gwa | tee /run/kernel.json
lab_section kernel_table; say "what the kernel holds after the stop (check.py: charon's SAs once each, nothing stale)"
"$LAB_PY" - <<'PY'
import json
k = json.load(open("/run/kernel.json"))
for st in k["states"]:
    print("state spi {spi} -> {daddr} reqid {reqid} offload {offload} packets {packets}".format(**st))
print("missing", k["missing"], "orphans", k["orphan_states"], "stale agent policies", k["stale_agent_policies"])
PY

lab_section journal; say "journalctl -u swan-offload (priority, message)"
journalctl -u swan-offload -o json --no-pager >/run/journal.json
"$LAB_PY" -c '
import json, sys
for line in open("/run/journal.json"):
    e = json.loads(line)
    if e.get("SYSLOG_IDENTIFIER") == "swan-offload":
        print(json.dumps([int(e.get("PRIORITY", -1)), e.get("MESSAGE")]))
'
say "no key material in anything printed above, nor in the journal (each SA key searched)"
lab_nokeys /run/journal.json
lab_section end
