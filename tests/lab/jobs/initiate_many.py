"""Inside the lab VM: bring up CHILD_SAs c2..cN of an established IKE_SA, as fast as charon
negotiates them.

    initiate_many.py SOCKET IKE N [LIMIT]

One VICI session asks ``initiate`` of each with a negative timeout (vici_control.c: no log
callback, charon answers at once and queues the CREATE_CHILD_SA): the IKE_SA's task manager
then runs the exchanges back to back. ``swanctl --initiate`` per CHILD_SA, as before, cost a
process start each under TCG and a worker thread blocked per initiate (about 300 CHILD_SAs in
half an hour), which kept real charon from serving N=1000. Waits until charon lists N
CHILD_SAs INSTALLED under IKE (LIMIT seconds, 1800 by default); prints how long it took.
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


def installed(path: str, ike: str) -> int:
    n = 0
    for msg in session(path).list_sas({"ike": ike}):
        for sa in msg.values():
            n += sum(1 for ch in sa.get("child-sas", {}).values() if ch.get("state") == b"INSTALLED")
    return n


def main() -> int:
    path, ike, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 1800.0
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
