"""Two real charon 5.9.8 daemons in network namespaces on the host kernel.

The host kernel has no ESP, so both daemons use the `kernel-libipsec` plugin
(userspace ESP over a TUN device). That gives charon's real VICI events,
SPIs, reqids and rekeys, but no kernel XFRM states or policies.

Conditions found on charon 5.9.8 + kernel-libipsec:
- an address of each local traffic selector must exist on the gateway (on lo);
- libipsec refuses ESN and transport mode; it always encapsulates in UDP;
- libipsec refuses a remote TS that equals the IKE peer ("conflicts with IKE
  traffic"), so the transport-ish child `host` is a /32 === /32 tunnel between
  lo addresses instead of between the gateways.

Event order/timing seen on gateway A (tests/data/charon-5.9.8-events.json):
- Every event arrives 5-20 ms after the swanctl action; related events come
  within the same millisecond, in this order:
- New IKE_SA: ike-updown(up) first, then child-updown(up) for the IKE_AUTH
  child; the IKE section still lists the running task (tasks-active
  IKE_ESTABLISH/CHILD_CREATE). A child created later by either side
  (CREATE_CHILD_SA) raises only child-updown(up); tasks-passive on the responder.
- IKE_SA going down (ours or the peer's DELETE): ike-updown (no "up" key, no
  child-sas, state DELETING) comes FIRST, then one child-updown (no "up" key)
  per child, whose state is still INSTALLED (bus.c: ike_updown() raises the
  child downs after its listeners). Per bus.c, children in state
  REKEYED/DELETED get no down event at all.
- Terminating one child: child-updown with child state DELETED.
- Child rekey (either side): only child-rekey, keyed by the plain child name
  with old (state REKEYED) / new (new uniqueid, same reqid, new SPIs). The old
  child then stays in list-sas with state DELETED for ~5 s
  (charon.delete_rekeyed_delay) and vanishes with no event.
- IKE rekey: only ike-rekey {old (state REKEYING, no child-sas), new (new
  uniqueid, same name)}; children move to the new IKE_SA keeping their
  uniqueids and SPIs, without any child event; the old IKE_SA is gone without
  an ike-updown.
- list-sas does not list IKE_SAs in uniqueid order (newest-first here).
- With libipsec every IKE_SA shows nat-remote/nat-any = yes and children
  encap = yes; no esn, mark, if-id or use-in/out keys appear (no traffic).
- charon stopped with SIGTERM deletes its IKE_SAs, so the peer gets
  ike-updown + child-updown (down) at once; after SIGKILL the peer sees
  nothing (no DPD configured) and keeps its SAs.
- charon leaves /run/charon.vici behind when it exits (SIGTERM too): clients
  then get ConnectionRefusedError, not FileNotFoundError.
- ike-update (MOBIKE) was not triggered.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from functools import cache
from string import Template

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = "/usr/lib/ipsec/plugins"
SIDES = ("a", "b")
PEER = {"a": "b", "b": "a"}

#: charon.load: kernel-libipsec must come before kernel-netlink.
CHARON_PLUGINS = ("random nonce openssl gcm aes sha1 sha2 hmac kdf gmp x509 pubkey "
                  "pkcs1 pem kernel-libipsec kernel-netlink socket-default vici")

STRONGSWAN_CONF = Template("""\
charon {
    load = $plugins
    install_virtual_ip = no
    plugins {
        vici {
            socket = unix:///run/charon.vici
        }
    }
    filelog {
        log {
            path = $dir/charon.log
            time_format = %H:%M:%S
            ike_name = yes
            flush_line = yes
            default = 1
        }
    }
}
swanctl {
    load = random nonce pem pkcs1 x509 pubkey
}
""")

#: Addressing of both sides; `$local_*`/`$remote_*` in the templates below.
ADDRS = {
    "a": {"v4": "192.0.2.1", "v6": "2001:db8::1", "net4": "10.10.1.0/24",
          "net6": "fd00:1::/64", "net4b": "10.10.3.0/24", "host": "10.10.5.1/32",
          "gw6": "fd00:3::/64"},
    "b": {"v4": "192.0.2.2", "v6": "2001:db8::2", "net4": "10.10.2.0/24",
          "net6": "fd00:2::/64", "net4b": "10.10.4.0/24", "host": "10.10.5.2/32",
          "gw6": "fd00:4::/64"},
}
#: Addresses put on lo: one inside each local traffic selector.
LO_ADDRS = {
    "a": ["10.10.1.1/32", "fd00:1::1/128", "10.10.3.1/32", "10.10.5.1/32", "fd00:3::1/128"],
    "b": ["10.10.2.1/32", "fd00:2::1/128", "10.10.4.1/32", "10.10.5.2/32", "fd00:4::1/128"],
}

_CHILD = """\
            $name {
                local_ts = $$local_$ts
                remote_ts = $$remote_$ts
                esp_proposals = aes128gcm16
            }
"""


def _child(name, ts=None):
    return Template(_CHILD).substitute(name=name, ts=ts or name)


#: IKE_SA `gw` (IPv4): children net4 (10.10.1.0/24 === 10.10.2.0/24), net6
#: (IPv6 child in the same IKE_SA) and net4b (another IPv4 child).
SWANCTL_GW = """\
    gw {
        local_addrs = $local_v4
        remote_addrs = $remote_v4
        proposals = aes128-sha256-ecp256
        local { auth = psk
            id = gw-$side.test }
        remote { auth = psk
            id = gw-$peer.test }
        children {
""" + _child("net4") + _child("net6") + _child("net4b") + """\
        }
    }
"""
#: IKE_SA `host` (IPv4): child `host`, a /32 === /32 tunnel (transport-ish).
SWANCTL_HOST = """\
    host {
        local_addrs = $local_v4
        remote_addrs = $remote_v4
        proposals = aes128-sha256-ecp256
        local { auth = psk
            id = host-$side.test }
        remote { auth = psk
            id = host-$peer.test }
        children {
""" + _child("host") + """\
        }
    }
"""
#: IKE_SA `gw6` over IPv6: child `v6net` (fd00:3::/64 === fd00:4::/64).
SWANCTL_GW6 = """\
    gw6 {
        local_addrs = $local_v6
        remote_addrs = $remote_v6
        proposals = aes128-sha256-ecp256
        local { auth = psk
            id = gw6-$side.test }
        remote { auth = psk
            id = gw6-$peer.test }
        children {
""" + _child("v6net", "gw6") + """\
        }
    }
"""
#: A PSK without ids applies to every identity.  Test-only secret.
SWANCTL_SECRETS = """\
secrets {
    ike-lab {
        secret = swan-offload-test-psk
    }
}
"""
#: The default swanctl.conf template for both sides.
SWANCTL_CONF = ("connections {\n" + SWANCTL_GW + SWANCTL_HOST + SWANCTL_GW6
                + "}\n" + SWANCTL_SECRETS)


def render(template: str, side: str) -> str:
    """Fill a swanctl.conf template for `side` ("a" or "b") from ADDRS."""
    values = {"side": side, "peer": PEER[side]}
    for key, value in ADDRS[side].items():
        values[f"local_{key}"] = value
    for key, value in ADDRS[PEER[side]].items():
        values[f"remote_{key}"] = value
    return Template(template).substitute(values)


def _run(*cmd, check=True, timeout=30, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@cache
def charon_available() -> tuple[bool, str]:
    """(True, "") if two charons with kernel-libipsec can run here, else why not."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    for path in (CHARON, f"{PLUGINS}/libstrongswan-kernel-libipsec.so",
                 f"{PLUGINS}/libstrongswan-openssl.so", "/dev/net/tun"):
        if not os.path.exists(path):
            return False, f"{path} is missing"
    for tool in ("ip", "swanctl", "mount"):
        if not shutil.which(tool):
            return False, f"{tool} is not installed"
    probe = f"soprobe-{secrets.token_hex(4)}"
    proc = _run("ip", "netns", "add", probe, check=False)
    if proc.returncode:
        return False, f"ip netns add failed: {proc.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return True, ""


class CharonPair:
    """Gateways a and b (charon each) joined by a veth; cleans up on exit."""

    def __init__(self, conf_a: str = SWANCTL_CONF, conf_b: str | None = None,
                 keep_dir: bool = False):
        """conf_a/conf_b are swanctl.conf templates (see render()); conf_b
        defaults to conf_a, as the templates are symmetric."""
        tag = secrets.token_hex(3)
        self.ns = {"a": f"soa-{tag}", "b": f"sob-{tag}"}
        self.dir = ""           # made by __enter__, removed by close()
        self.confs = {"a": conf_a, "b": conf_b or conf_a}
        self.keep_dir = keep_dir
        self._procs: dict[str, subprocess.Popen] = {}

    # -- lifecycle
    def __enter__(self) -> "CharonPair":
        self.dir = tempfile.mkdtemp(prefix=f"swan-{self.ns['a'][4:]}-")
        try:
            self._setup_network()
            for side in SIDES:
                self._write_strongswan_conf(side)
                self.start(side)
            self._wait_link()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Kill both charons, delete the namespaces and the temp dir."""
        for side in SIDES:
            self.stop(side, kill=True)
        for ns in self.ns.values():
            _run("ip", "netns", "del", ns, check=False)
        if self.dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing
    def exec(self, side: str, *cmd, check=True, timeout=30) -> subprocess.CompletedProcess:
        """Run a command inside the namespace of `side`."""
        return _run("ip", "netns", "exec", self.ns[side], *cmd, check=check, timeout=timeout)

    def addr(self, side: str, cidr: str, dev: str = "lo"):
        """Add an address (e.g. one inside a local traffic selector)."""
        extra = ["nodad"] if ":" in cidr else []
        _run("ip", "-n", self.ns[side], "addr", "add", cidr, "dev", dev, *extra)

    def _setup_network(self):
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
            _run("ip", "netns", "exec", ns, "sysctl", "-qw",
                 "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.ns["a"], "link", "add", "eth0", "type", "veth",
             "peer", "name", "eth0", "netns", self.ns["b"])
        for side in SIDES:
            _run("ip", "-n", self.ns[side], "link", "set", "eth0", "up")
            self.addr(side, ADDRS[side]["v4"] + "/24", "eth0")
            self.addr(side, ADDRS[side]["v6"] + "/64", "eth0")
            for cidr in LO_ADDRS[side]:
                self.addr(side, cidr)

    def _wait_link(self, timeout=5.0):
        """The kernel's linkwatch brings the veth up to 1 s late; until then
        IPv6 packets wait for neighbour discovery (IKE over IPv6 took 1 s)."""
        deadline = time.monotonic() + timeout
        for ns in self.ns.values():
            while time.monotonic() < deadline:
                out = _run("ip", "-n", ns, "-6", "addr", "show", "dev", "eth0",
                           "scope", "link").stdout
                if "inet6" in out and "tentative" not in out:
                    break
                time.sleep(0.05)

    def _side_dir(self, side, *parts):
        return os.path.join(self.dir, side, *parts)

    def _write_strongswan_conf(self, side):
        os.makedirs(self._side_dir(side, "run"), exist_ok=True)
        for sub in ("x509", "x509ca", "x509aa", "x509ocsp", "x509crl", "x509ac",
                    "pubkey", "private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12"):
            os.makedirs(self._side_dir(side, "swanctl", sub), exist_ok=True)
        with open(self._side_dir(side, "strongswan.conf"), "w") as f:
            f.write(STRONGSWAN_CONF.substitute(plugins=CHARON_PLUGINS,
                                               dir=self._side_dir(side)))

    # -- charon
    def vici_path(self, side: str) -> str:
        """The VICI socket of `side`, as seen from outside its namespace."""
        return self._side_dir(side, "run", "charon.vici")

    def log_path(self, side: str) -> str:
        return self._side_dir(side, "charon.log")

    def start(self, side: str, timeout: float = 10.0):
        """Start charon for `side` and load its swanctl.conf (also after stop())."""
        if side in self._procs:
            return
        run = self._side_dir(side, "run")
        for stale in ("charon.pid", "charon.vici"):
            if os.path.exists(os.path.join(run, stale)):
                os.unlink(os.path.join(run, stale))
        script = f"mount --bind {run} /run && exec {CHARON}"
        env = dict(os.environ, STRONGSWAN_CONF=self._side_dir(side, "strongswan.conf"))
        with open(self._side_dir(side, "charon.out"), "ab") as out:
            self._procs[side] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[side], "sh", "-c", script],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self._wait_vici(side, timeout)
        self.load_side(side)

    def _wait_vici(self, side, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[side].poll() is not None:
                raise RuntimeError(f"charon {side} exited: {self._tail(side)}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.vici_path(side))
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"charon {side} has no VICI socket: {self._tail(side)}")

    def _tail(self, side, lines=15):
        text = ""
        for name in ("charon.out", "charon.log"):
            try:
                with open(self._side_dir(side, name), errors="replace") as f:
                    text += "".join(f.readlines()[-lines:])
            except OSError:
                pass
        return text

    def stop(self, side: str, kill: bool = False, timeout: float = 10.0):
        """End charon for `side`: SIGTERM (clean shutdown) or SIGKILL (crash)."""
        proc = self._procs.pop(side, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- swanctl
    def swanctl(self, side: str, *args, check=True, timeout=30) -> subprocess.CompletedProcess:
        """Run swanctl against the charon of `side`."""
        env = dict(os.environ, STRONGSWAN_CONF=self._side_dir(side, "strongswan.conf"))
        return _run("swanctl", *args, "--uri", f"unix://{self.vici_path(side)}",
                    check=check, timeout=timeout, env=env)

    def load_side(self, side: str):
        path = self._side_dir(side, "swanctl", "swanctl.conf")
        with open(path, "w") as f:
            f.write(render(self.confs[side], side))
        self.swanctl(side, "--load-all", "--noprompt", "--file", path)

    def load(self, conf_a: str, conf_b: str | None = None):
        """Replace both swanctl.conf templates and load them."""
        self.confs = {"a": conf_a, "b": conf_b or conf_a}
        for side in SIDES:
            self.load_side(side)

    def initiate(self, child: str, ike: str | None = None, side: str = "a"):
        """Bring up `child` (in IKE_SA config `ike`) from `side`; waits for it."""
        args = ["--initiate", "--child", child] + (["--ike", ike] if ike else [])
        return self.swanctl(side, *args, "--timeout", "15")
