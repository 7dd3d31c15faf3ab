# Lab topology, sourced (bash) by jobs running inside the VM:  . tests/lab/topology.sh
#
#   hosta ---lan--- gwa ===wan=== gwb ---lan--- hostb
#   10.1.0.2    10.1.0.1  192.0.2.1   192.0.2.2  10.2.0.1    10.2.0.2
#   fd00:1::2   fd00:1::1 2001:db8::1 2001:db8::2 fd00:2::1   fd00:2::2
#
# Every device is a veth; each gateway's interfaces are named "wan" and "lan", each
# host's "lan". One charon per gateway namespace; its /run is /run/<ns> (VICI socket
# /run/<ns>/charon.vici, log /run/<ns>/charon.log, pid /run/<ns>/charon.pid).
#
# Settings (environment, read when charon starts):
#   LAB_DELETE_REKEYED_DELAY  charon.delete_rekeyed_delay (default 5)
#   LAB_CHARON_LOGLEVEL       filelog default level (default 1)
#   LAB_CHARON_EXTRA          extra lines inside the charon { } section

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_CHARON_LOAD="random nonce aes sha1 sha2 hmac kdf gmp openssl x509 pubkey pkcs1 pem kernel-netlink socket-default vici updown"

lab_log() { echo "lab: $*" >&2; }
lab_die() { lab_log "$*"; return 1; }

# Two namespaces joined by a veth pair: lab_link NS1 IF1 NS2 IF2
lab_link() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3" &&
        ip -n "$1" link set "$2" up && ip -n "$3" link set "$4" up
}

# lab_wan: the gateways' link. LAB_WAN=swsim loads the simulated packet-offload NIC pair
# (tests/lab/sim, built by sim/build.sh; LAB_SIM_ARGS e.g. "max_sa=4"), else a veth pair.
lab_wan() {
    if [ "${LAB_WAN:-veth}" != swsim ]; then
        lab_link gwa wan gwb wan
        return
    fi
    local ko
    ko=$(ls "$LAB_DIR"/../../.lab/sim/"$(uname -r)"/swsim.ko) || lab_die "swsim.ko not built: tests/lab/sim/build.sh" || return
    modprobe -a esp4 esp6 xfrm_user && insmod "$ko" ${LAB_SIM_ARGS:-} || lab_die "insmod swsim failed" || return
    ip link set swsim0 netns gwa && ip link set swsim1 netns gwb &&
        ip -n gwa link set swsim0 name wan && ip -n gwb link set swsim1 name wan &&
        ip -n gwa link set wan up && ip -n gwb link set wan up
}

# lab_topology: create the four namespaces, links, addresses and routes.
lab_topology() {
    local ns
    for ns in gwa gwb hosta hostb; do
        ip netns add "$ns" && ip -n "$ns" link set lo up || return
    done
    lab_wan && lab_link gwa lan hosta lan && lab_link gwb lan hostb lan || return
    ip -n gwa addr add 192.0.2.1/24 dev wan && ip -n gwa addr add 2001:db8::1/64 dev wan nodad &&
    ip -n gwb addr add 192.0.2.2/24 dev wan && ip -n gwb addr add 2001:db8::2/64 dev wan nodad || return
    local side
    for side in 1 2; do
        local gw=gwa host=hosta
        [ $side = 2 ] && gw=gwb host=hostb
        ip -n $gw addr add 10.$side.0.1/24 dev lan && ip -n $gw addr add fd00:$side::1/64 dev lan nodad &&
        ip -n $host addr add 10.$side.0.2/24 dev lan && ip -n $host addr add fd00:$side::2/64 dev lan nodad &&
        ip -n $host route add default via 10.$side.0.1 && ip -n $host -6 route add default via fd00:$side::1 &&
        # the remote subnet via the peer, as a gateway's routing would have it: charon installs
        # no route for children with protocol-restricted selectors (e.g. 10.2.0.0/24[icmp])
        local peer=2 far=$((3 - side))
        [ $side = 2 ] && peer=1
        ip -n $gw route add 10.$far.0.0/24 via 192.0.2.$peer && ip -n $gw -6 route add fd00:$far::/64 via 2001:db8::$peer &&
        ip netns exec $gw sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward &&
            echo 1 >/proc/sys/net/ipv6/conf/all/forwarding' || return
    done
}

# lab_charon_start NS: start charon 5.9.8 in NS and wait for its VICI socket.
lab_charon_start() {
    local ns=$1 dir=/run/$1 i
    mkdir -p "$dir"
    rm -f "$dir/charon.vici" "$dir/charon.pid"
    cat >"$dir/strongswan.conf" <<EOF
charon {
    load = $LAB_CHARON_LOAD
    delete_rekeyed_delay = ${LAB_DELETE_REKEYED_DELAY:-5}
    filelog {
        lab {
            path = /run/charon.log
            time_format = %H:%M:%S
            ike_name = yes
            default = ${LAB_CHARON_LOGLEVEL:-1}
            flush_line = yes
        }
    }
    ${LAB_CHARON_EXTRA:-}
}
swanctl {
    load = random nonce pem pkcs1 x509 pubkey
}
EOF
    # ip netns exec gives a private mount namespace: /run/NS becomes charon's /run
    # (5.9.8 hard-codes /var/run/charon.pid; /var/run -> /run).
    # The subshell keeps charon out of the job's job table (no "Killed" noise).
    # LAB_CHARON_ROOT=DIR runs the charon of that chroot instead (tests/lab/sim/build.sh puts
    # strongSwan 6.0.1 into .lab/chroot-trixie); the host's /run/NS is its /run there too.
    local root=${LAB_CHARON_ROOT:-} enter=""
    [ -z "$root" ] || enter="mount --bind /proc $root/proc && mount --bind /dev $root/dev && mount --bind /sys $root/sys && mount --bind $dir $root/run && exec chroot $root"
    [ -n "$root" ] || enter="mount --bind $dir /run && exec"
    (ip netns exec "$ns" sh -c "$enter env STRONGSWAN_CONF=/run/strongswan.conf /usr/lib/ipsec/charon" \
        >>"$dir/charon.out" 2>&1 </dev/null &)
    for i in $(seq 100); do
        [ -S "$dir/charon.vici" ] && return 0
        sleep 0.2
    done
    lab_die "charon in $ns did not open $dir/charon.vici; $(tail -n 5 "$dir/charon.out")"
}

# lab_charon_stop NS [SIGNAL]: stop charon (TERM: it deletes its SAs; KILL: leaves them).
lab_charon_stop() {
    local ns=$1 sig=${2:-TERM} pid i
    pid=$(cat "/run/$ns/charon.pid" 2>/dev/null) || return 0
    kill -s "$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "/run/$ns/charon.pid" "/run/$ns/charon.vici"; return 0; }
        sleep 0.1
    done
    lab_die "charon $pid in $ns did not stop"
}
lab_charon_kill() { lab_charon_stop "$1" KILL; }

# lab_charon_restart NS: stop, start and reload the last loaded swanctl.conf.
lab_charon_restart() {
    lab_charon_stop "$1" && lab_charon_start "$1" || return
    if [ -e "/run/$1/swanctl/swanctl.conf" ]; then lab_load "$1" "/run/$1/swanctl/swanctl.conf"; fi
}

# lab_swanctl NS ARGS...: swanctl against the charon of NS.
lab_swanctl() {
    local ns=$1; shift
    STRONGSWAN_CONF=/run/$ns/strongswan.conf swanctl "$@" --uri "unix:///run/$ns/charon.vici"
}

# lab_load NS [FILE]: load a swanctl.conf (default tests/lab/swanctl/NS.conf).
lab_load() {
    local ns=$1 file=${2:-$LAB_DIR/swanctl/$1.conf} base=/run/$1/swanctl d
    for d in x509 x509ca x509aa x509ocsp x509crl x509ac pubkey private rsa ecdsa bliss pkcs8 pkcs12; do
        mkdir -p "$base/$d"
    done
    [ "$file" -ef "$base/swanctl.conf" ] || cp "$file" "$base/swanctl.conf" || return
    lab_swanctl "$ns" --load-all --file "$base/swanctl.conf" >"$base/load.out" 2>&1 ||
        lab_die "swanctl --load-all failed in $ns: $(cat "$base/load.out")"
}

# lab_initiate [CHILD] [IKE] [NS]: bring up CHILD (default net) from NS (default gwa).
lab_initiate() {
    local child=${1:-net} ike=${2:-${1:-net}} ns=${3:-gwa}
    lab_swanctl "$ns" --initiate --child "$child" --ike "$ike" --timeout 60 >"/run/$ns/initiate.out" 2>&1 ||
        lab_die "initiate $child failed in $ns: $(tail -n 20 "/run/$ns/initiate.out")"
}

# lab_ping [COUNT] [DST] [NS]: busybox ping from hosta (default 5 to 10.2.0.2).
lab_ping() {
    local count=${1:-5} dst=${2:-10.2.0.2} ns=${3:-hosta} src
    case $dst in
        *:*) src=$(ip -n "$ns" -6 -o addr show dev lan scope global | awk '{sub("/.*", "", $4); print $4; exit}')
             ip netns exec "$ns" busybox ping6 -c "$count" -w $((count + 10)) -I "$src" "$dst" ;;
        *)   src=$(ip -n "$ns" -4 -o addr show dev lan | awk '{sub("/.*", "", $4); print $4; exit}')
             ip netns exec "$ns" busybox ping -c "$count" -w $((count + 10)) -I "$src" "$dst" ;;
    esac
}

# lab_up: topology, both charons, default confs, tunnel "net" up.
lab_up() {
    lab_topology && lab_charon_start gwa && lab_charon_start gwb &&
        lab_load gwa && lab_load gwb && lab_initiate net
}

# ---------------------------------------------------------------- agent and checks
LAB_SO="$LAB_DIR/../../.venv/bin/swan-offload"
LAB_PY="$LAB_DIR/../../.venv/bin/python"

# lab_agent_conf [RULES...]: write /run/so.toml for gwa's charon; each RULE is "match fallback [mode]".
# LAB_AGENT_EXTRA: more lines for the [agent] table (e.g. "seq_margin = 8"); LAB_RESYNC_SECONDS:
# the idle resync (2 here, so scenarios catch up fast; the shipped default is 300), and
# LAB_RESYNC_SHARE its share of a core (1 here: every 2 s however long; shipped 0.01).
lab_agent_conf() {
    printf '[vici]\nsocket = "/run/gwa/charon.vici"\nreconnect_max_seconds = 1\n[agent]\nstatus_file = "/run/so-status.json"\nresync_seconds = %s\nresync_share = %s\n%s\n' "${LAB_RESYNC_SECONDS:-2}" "${LAB_RESYNC_SHARE:-1}" "${LAB_AGENT_EXTRA:-}" >/run/so.toml
    local r m f mode
    for r in "$@"; do
        read -r m f mode <<<"$r"
        printf '[[rule]]\nmatch = "%s"\nfallback = "%s"\n' "$m" "$f" >>/run/so.toml
        [ -z "$mode" ] || printf 'mode = "%s"\n' "$mode" >>/run/so.toml
    done
}

# lab_agent_start: run the daemon in gwa (log /run/so.log, appended); LAB_AGENT = its pid.
lab_agent_start() {
    rm -f /run/so-status.json
    if [ -n "${LAB_SAMPLE:-}" ]; then  # bench/scale.py --profile: where the agent's CPU goes
        LAB_STARTS=$(( ${LAB_STARTS:-0} + 1 )); mkdir -p "$LAB_OUT/logs"
        ip netns exec gwa "$LAB_PY" "$LAB_DIR/jobs/sampler.py" "$LAB_OUT/logs/sampler-$LAB_STARTS.txt" -c /run/so.toml run >>/run/so.log 2>&1 &
    else
        ip netns exec gwa "$LAB_SO" -c /run/so.toml run >>/run/so.log 2>&1 &
    fi
    LAB_AGENT=$!
}

# lab_agent_settled: wait until the agent has decided exactly the CHILD_SAs charon lists as
# INSTALLED (none, after a termination), as read from its status.
lab_agent_settled() {
    local i
    for i in $(seq 1 ${1:-200}); do
        "$LAB_PY" - <<'PY' 2>/dev/null && return 0
import json, sys
sys.path.insert(0, "tests/lab/jobs")
from check import snapshot
want = {(c["ike"], c["uniqueid"]) for c in snapshot("gwa")["children"] if c["state"] == "INSTALLED"}
d = json.load(open("/run/so-status.json"))
got = {(c["ike"], c["uniqueid"]) for c in d["children"] if c["mode"] != "pending"}
sys.exit(0 if d["agent"]["vici_connected"] and want == got else 1)
PY
        sleep 0.3
    done
    lab_die "agent status did not catch up with charon: $(tail -n 5 /run/so.log)"
}

# lab_section NAME: start a named section of the job's output ("== NAME").
lab_section() { echo "== $1"; }

# lab_check NAME [NS]: section NAME with check.py's JSON for NS (default gwa).
lab_check() { lab_section "$1"; "$LAB_PY" "$LAB_DIR/jobs/check.py" "${2:-gwa}"; }

# lab_status NAME: section NAME with the agent's status --json.
lab_status() { lab_section "$1"; "$LAB_SO" -c /run/so.toml status --json; }

# lab_pinger COUNT [DST]: background ping from hosta every 0.2 s, output in /run/pinger.out.
lab_pinger() {
    local dst=${2:-10.2.0.2}
    ip netns exec hosta busybox ping -i 0.2 -c "$1" -w $(( $1 / 5 + 20 )) -I 10.1.0.2 "$dst" >/run/pinger.out 2>&1 &
    LAB_PINGER=$!
}

# lab_udp PORTS COUNT [GAP]: COUNT datagrams hosta -> hostb 10.2.0.2 on each of PORTS
# ("5001" or "5001-5050"); prints hostb's {"port": received} JSON. With LAB_UDP_TIMES=FILE
# set, each arrival is also written there as [port, index, boottime].
lab_udp() { lab_udp_between hosta hostb 10.2.0.2 "$1" "$2" "${3:-0.05}"; }

# lab_udp_between FROM TO DST PORTS COUNT [GAP] [SPORT]: the same from namespace FROM to TO
# (DST one of TO's addresses, IPv4 or IPv6), sent from port SPORT if given.
lab_udp_between() {
    local out=/run/udp.$$.$1.$2 i gap=${6:-0.05}
    rm -f "$out" "$out.err"
    ip netns exec "$2" python3 "$LAB_DIR/jobs/udp.py" recv "$4" "$5" "$(awk "BEGIN{print $5 * $gap * 1.5 + 15}")" $LAB_UDP_TIMES >"$out" 2>"$out.err" &
    local rx=$!
    for i in $(seq 1 100); do grep -q ready "$out.err" 2>/dev/null && break; sleep 0.1; done
    ip netns exec "$1" python3 "$LAB_DIR/jobs/udp.py" send "$3" "$4" "$5" "$gap" ${7:-}
    wait $rx
    cat "$out"
}

# lab_udp_both CHILD PORT MODE: 20 datagrams out to PORT and 20 back from it, through a
# tunnel (hosta <-> hostb) or a transport SA (gwa <-> gwb: transport over IPv4, transport6
# over IPv6); one JSON line {child, out, in}.
lab_udp_both() {
    local src=hosta dst=hostb to=10.2.0.2 back=10.1.0.2 out in
    [ "$3" = transport ] && { src=gwa dst=gwb to=192.0.2.2 back=192.0.2.1; }
    [ "$3" = transport6 ] && { src=gwa dst=gwb to=2001:db8::2 back=2001:db8::1; }
    out=$(lab_udp_between "$src" "$dst" "$to" "$2" 20 0.02 | tail -n 1)
    in=$(lab_udp_between "$dst" "$src" "$back" 6100 20 0.02 "$2" | tail -n 1)
    echo "{\"child\": \"$1\", \"out\": $out, \"in\": $in}"
}

# lab_devstat NS NAME: one `ethtool -S` counter of NS's wan (swsim's, mlx5's names).
lab_devstat() {
    ip netns exec "$1" "$LAB_PY" -c 'import sys; from pyroute2.ethtool.ioctl import IoctlEthtool; print(dict(IoctlEthtool("wan").get_statistics())[sys.argv[1]])' "$2"
}

# lab_conf_many N: swanctl confs with N CHILD_SAs c1..cN under one IKE_SA "many", child ci
# carrying UDP to port 5000+i (/run/many-gwa.conf, /run/many-gwb.conf).
lab_conf_many() {
    local side me peer a b i
    for side in a b; do
        if [ $side = a ]; then me=gwa peer=gwb a=1 b=2; else me=gwb peer=gwa a=2 b=1; fi
        {
            echo "connections { many { local_addrs = 192.0.2.$a
                remote_addrs = 192.0.2.$b
                proposals = aes128-sha256-x25519
                local { auth = psk
                    id = $me }
                remote { auth = psk
                    id = $peer }
                children {"
            for i in $(seq 1 "$1"); do
                if [ $side = a ]; then
                    echo "c$i { local_ts = 10.1.0.0/24[udp]
                        remote_ts = 10.2.0.0/24[udp/$((5000 + i))]
                        esp_proposals = aes128gcm16 }"
                else
                    echo "c$i { local_ts = 10.2.0.0/24[udp/$((5000 + i))]
                        remote_ts = 10.1.0.0/24[udp]
                        esp_proposals = aes128gcm16 }"
                fi
            done
            echo "} } }"
            sed -n '/^secrets/,$p' "$LAB_DIR/swanctl/$me.conf"
        } >"/run/many-$me.conf"
    done
}

# lab_initiate_many N: bring up c1..cN of "many" from gwa: c1 first (the IKE_SA), then the
# others queued on it over one VICI session (jobs/initiate_many.py).
lab_initiate_many() {
    lab_initiate c1 many || return
    [ "$1" -gt 1 ] || return 0
    ip netns exec gwa "$LAB_PY" "$LAB_DIR/jobs/initiate_many.py" /run/gwa/charon.vici many "$1" >/run/gwa/initiate-many.out 2>&1 ||
        { lab_die "initiate failed: $(tail -n 5 /run/gwa/initiate-many.out)"; return 1; }
    cat /run/gwa/initiate-many.out >&2
}

# lab_many_up N: the topology, charon on both gateways, c1..cN of "many" up (lab_conf_many).
lab_many_up() {
    lab_topology && lab_charon_start gwa && lab_charon_start gwb && lab_conf_many "$1" &&
        lab_load gwa /run/many-gwa.conf && lab_load gwb /run/many-gwb.conf && lab_initiate_many "$1"
}

# lab_xfrm NS state|policy: `ip -s -d xfrm` of NS (iproute2 6.15) with every key redacted,
# so job output never carries key material.
lab_xfrm() {
    ip -n "$1" -s -d xfrm "$2" | sed -E 's/^(\s*(aead|enc|auth|auth-trunc|comp) \S+) 0x[0-9a-f]+/\1 <key>/'
}

# lab_capture_start NS: capture ESP frames on NS's wan into /run/NS.esp (LAB_CAPTURE = pid).
lab_capture_start() {
    rm -f "/run/$1.esp" "/run/$1.esp.err"
    ip netns exec "$1" "$LAB_PY" "$LAB_DIR/jobs/esp_wire.py" capture wan "/run/$1.esp" 2>"/run/$1.esp.err" &
    LAB_CAPTURE=$!
    local i
    for i in $(seq 1 100); do grep -q ready "/run/$1.esp.err" 2>/dev/null && return 0; sleep 0.1; done
    lab_die "capture on $1 did not start: $(cat "/run/$1.esp.err")"
}

# lab_nokeys: section "nokeys" with {"keys": N, "found_in": [...]}: every key of gwa's and
# gwb's states searched (hex) in everything the job printed so far and in the agent's log.
# A control file with iproute2's unredacted output must be the only one found.
lab_nokeys() {
    lab_section nokeys
    ip -n gwa xfrm state >/run/nokeys-control
    "$LAB_PY" - "$LAB_OUT/stdout" "$LAB_OUT/stderr" /run/so.log /run/nokeys-control "$@" <<'PY'
import json, os, sys
from swan_offload.backend import NetlinkBackend
keys = {a.key.reveal().hex() for ns in ("gwa", "gwb") for s in NetlinkBackend(ns).dump_states()
        for a in (s.aead, s.crypt, s.auth) if a is not None}
texts = {f: open(f, errors="replace").read().lower() for f in sys.argv[1:] if os.path.exists(f)}
print(json.dumps({"keys": len(keys), "files": len(texts),
                  "found_in": sorted({f for f, t in texts.items() for k in keys if k in t})}))
PY
}
