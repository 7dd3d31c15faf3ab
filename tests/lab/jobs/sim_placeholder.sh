# What the kernel does when a packet meets charon's OUT policy while no SA of the SPI its
# template names exists (a move's swap, a device's flush): xfrm_state_find leaves a larval
# state with that SPI, and a NEWSA of the SPI answers EEXIST until it expires
# (xfrm_acq_expires, 30 s). The backend replaces such a placeholder (backend.replace_placeholders).
# No charon, no agent: one state and one policy as charon 5.9.8 installs them, a throwaway key.
export LAB_WAN=swsim
. tests/lab/topology.sh
lab_topology
spi=0xc1000005
ip -n gwa xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi $spi reqid 5 mode tunnel \
    aead 'rfc4106(gcm(aes))' 0x$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n') 128
ip -n gwa xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out priority 375423 \
    tmpl src 192.0.2.1 dst 192.0.2.2 proto esp spi $spi reqid 5 mode tunnel
# the kernel leaves a placeholder only when a key manager takes the ACQUIRE (km_query): charon
# always listens; here iproute2's monitor does
ip netns exec gwa ip xfrm monitor acquire >/run/acquire.log 2>&1 &
MON=$!
sleep 0.5
lab_section placeholder
ip netns exec gwa "$LAB_PY" - <<'PY'
import json
import socket

from swan_offload.backend import AddState, DelState, NetlinkBackend
from swan_offload.mirror import is_larval
from swan_offload.xfrm import objects as o

b = NetlinkBackend("gwa")
sid = o.StateId("192.0.2.2", 0xC1000005, 50, 2)
st = b.get_state(sid)
out = {"read": st is not None and st.aead is not None}
b.apply([DelState(sid)])  # the swap's first half


def packet() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.1.0.1", 0))
    try:
        s.sendto(b"x", ("10.2.0.2", 9))
    except OSError as e:  # the acquire is in progress: the packet is dropped
        out.setdefault("send", e.errno)
    s.close()


def held() -> list[str]:
    return ["larval" if is_larval(x) else "sa" for x in b.dump_states() if x.spi == sid.spi]


packet()
out["after_packet"] = held()
(err,) = b._send([AddState(st)])  # the kernel's own answer, without the backend's remedy
out["plain_add"] = err.reason if err else "added"
(err,) = b.apply([AddState(st)])
out["backend_add"] = err.reason if err else "added"
out["after_add"] = held()
got = b.get_state(sid)
out["same_key"] = got is not None and got.aead is not None and got.aead.key.reveal() == st.aead.key.reveal()
print(json.dumps(out))
PY
kill $MON; wait $MON 2>/dev/null || true
lab_section acquire; cat /run/acquire.log
lab_section end
