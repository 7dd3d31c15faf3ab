"""Inside the lab VM: bring up CHILD_SAs c2..cN of an established IKE_SA, as fast as charon
negotiates them.

    initiate_many.py SOCKET IKE N [LIMIT]
    initiate_many.py --settled SOCKET IKE N [LIMIT]

One VICI session asks ``initiate`` of each with a negative timeout (vici_control.c: no log
callback, charon answers at once and queues the CREATE_CHILD_SA): the IKE_SA's task manager
then runs the exchanges back to back. ``swanctl --initiate`` per CHILD_SA, as before, cost a
process start each under TCG and a worker thread blocked per initiate (about 300 CHILD_SAs in
half an hour), which kept real charon from serving N=1000. Waits until charon lists N
CHILD_SAs INSTALLED under IKE (LIMIT seconds, 1800 by default); prints how long it took.

``--settled`` initiates nothing and waits until charon lists exactly N CHILD_SAs under IKE,
all INSTALLED, twice in a row: after a device flap the agent asks a rekey of every restored
CHILD_SA, and a kernel check taken while charon still works through 1,000 of them reads
rekeys in flight (a successor listed before its SAs, a predecessor's SAs being deleted).
"""

from __future__ import annotations

import socket
import sys
import time

import vici


def session(path: str) -> vici.Session:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return vici.Session(s)


def states(path: str, ike: str) -> list[bytes]:
    return [ch.get("state", b"") for msg in session(path).list_sas({"ike": ike}) for sa in msg.values() for ch in sa.get("child-sas", {}).values()]


def installed(path: str, ike: str) -> int:
    return sum(1 for st in states(path, ike) if st == b"INSTALLED")


def settled(path: str, ike: str, n: int, limit: float) -> int:
    t0, calm, seen = time.monotonic(), 0, []
    while time.monotonic() - t0 < limit:
        seen = states(path, ike)
        calm = calm + 1 if len(seen) == n and all(st == b"INSTALLED" for st in seen) else 0
        if calm == 2:
            print(f"charon settled: {n} CHILD_SAs of {ike} INSTALLED after {time.monotonic() - t0:.1f} s", flush=True)
            return 0
        time.sleep(2)
    print(f"charon did not settle in {limit:.0f} s: {len(seen)} CHILD_SAs listed, {sum(st != b'INSTALLED' for st in seen)} not INSTALLED",
          file=sys.stderr, flush=True)
    return 1


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--settled"]
    path, ike, n = args[0], args[1], int(args[2])
    limit = float(args[3]) if len(args) > 3 else 1800.0
    if "--settled" in sys.argv:
        return settled(path, ike, n, limit)
    t0 = time.monotonic()
    v = session(path)
    for i in range(2, n + 1):
        for _log in v.initiate({"child": f"c{i}", "ike": ike, "timeout": "-1"}):
            pass
    got = 0
    while time.monotonic() - t0 < limit:
        got = installed(path, ike)
        if got >= n:
            print(f"{got} CHILD_SAs of {ike} installed in {time.monotonic() - t0:.1f} s", flush=True)
            return 0
        time.sleep(2)
    print(f"only {got} of {n} CHILD_SAs of {ike} installed after {limit:.0f} s", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
