"""Reading a state dump: the full decoder against the lean counters reader (xfrm/counters.py).

Pure Python, no kernel: N NEWSA messages as the kernel sends them in a dump (AES-GCM, replay
state, packet offload), decoded into XfrmState objects (what reconciles need) and read into
SaCounters (what the per-second held-copy refresh and each metrics scrape need). Prints per
N both times, per state, and full/lean. ``--sizes`` picks N.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swan_offload.xfrm import constants as c  # noqa: E402
from swan_offload.xfrm import objects as o  # noqa: E402
from swan_offload.xfrm.counters import parse_dump  # noqa: E402
from swan_offload.xfrm.netlink import decode_messages  # noqa: E402


def dump(n: int) -> list[bytes]:
    key = o.Secret(bytes(20))
    out = []
    for i in range(n):
        st = o.XfrmState(o.Selector(socket.AF_INET, "0.0.0.0", "0.0.0.0", 0, 0), "192.0.2.2", 0xC0000000 + i, c.IPPROTO_ESP,
                         "192.0.2.1", socket.AF_INET, c.XFRM_MODE_TUNNEL, i + 1, replay_window=32,
                         aead=o.Algo("rfc4106(gcm(aes))", key, 160, icv_len=128), replay=o.ReplayState(), offload=o.Offload(2, 4))
        msg = o.state_to_msg(st)
        msg["header"] = {"type": c.XFRM_MSG_NEWSA, "flags": 2, "sequence_number": 1, "pid": 0}
        msg.encode()
        out.append(bytes(msg.data))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000])
    args = ap.parse_args()
    print(f"{'N':>6} {'full s':>8} {'us/state':>9} {'lean s':>8} {'us/state':>9} {'full/lean':>9}")
    for n in args.sizes:
        chunks = dump(n)
        blob = b"".join(chunks)
        t = time.perf_counter()
        full = [o.state_from_msg(m) for _t, _f, _s, _p, m in decode_messages(blob)]
        tf = time.perf_counter() - t
        t = time.perf_counter()
        lean = list(parse_dump(chunks))
        tl = time.perf_counter() - t
        assert len(full) == len(lean) == n
        print(f"{n:>6} {tf:>8.3f} {tf / n * 1e6:>9.1f} {tl:>8.4f} {tl / n * 1e6:>9.1f} {tf / tl:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
