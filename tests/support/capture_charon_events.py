"""Record real charon 5.9.8 VICI events on gateway A (needs root).

    .venv/bin/python tests/support/capture_charon_events.py [OUT.json]

Writes a list of {"event", "message", "step", "t"}: "step" names the action
that preceded the event, "t" is seconds since that action started. Entries
with event "list-sa" are `list-sas` output taken at that step. Values are
str (VICI sends bytes); nesting and lists are kept. `log`/`control-log` are
not recorded. No VICI message carries key material.
"""

import json
import os
import sys
import threading
import time

from charon_host import CharonPair, charon_available
from vici_client import session

EVENTS = ["ike-updown", "ike-rekey", "ike-update", "child-updown", "child-rekey"]
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "..", "data",
                           "charon-5.9.8-events.json")


def to_str(value):
    if isinstance(value, dict):
        return {k: to_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_str(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


class Recorder:
    """Listens on A in a thread and tags every record with the current step."""

    def __init__(self, path):
        self.path, self.records, self.done = path, [], threading.Event()
        self.step, self.started = "start", time.monotonic()
        self.registered = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        self.registered.wait(5)

    def add(self, event, message):
        self.records.append({"event": event, "message": to_str(message), "step": self.step,
                             "t": round(time.monotonic() - self.started, 3)})

    def begin(self, step):
        self.step, self.started = step, time.monotonic()

    def _listen(self):
        listener = session(self.path).listen(EVENTS, timeout=0.1)
        for label, message in listener:
            self.registered.set()
            if label is not None:
                self.add(label.decode(), message)
            if self.done.is_set():
                listener.close()
                return

    def snapshot(self):
        for sa in session(self.path).list_sas():
            self.add("list-sa", sa)


def capture(out):
    with CharonPair() as pair:
        rec = Recorder(pair.vici_path("a"))

        def step(name, action, settle=1.0):
            rec.begin(name)
            action()
            time.sleep(settle)

        step("a initiates net4 (new IKE_SA gw)", lambda: pair.initiate("net4", "gw"))
        step("a initiates net6 (IPv6 child in gw)", lambda: pair.initiate("net6", "gw"))
        step("b initiates net4b (CREATE_CHILD_SA in gw)",
             lambda: pair.initiate("net4b", "gw", side="b"))
        step("a initiates host (/32 === /32)", lambda: pair.initiate("host", "host"))
        step("a initiates v6net (IKE over IPv6)", lambda: pair.initiate("v6net", "gw6"))
        rec.snapshot()
        step("a rekeys child net4", lambda: pair.swanctl("a", "--rekey", "--child", "net4"))
        rec.snapshot()
        time.sleep(6)           # beyond charon.delete_rekeyed_delay (5 s)
        rec.snapshot()
        step("b rekeys child host", lambda: pair.swanctl("b", "--rekey", "--child", "host"),
             settle=7)
        step("a rekeys IKE_SA gw", lambda: pair.swanctl("a", "--rekey", "--ike", "gw"))
        rec.snapshot()
        step("a terminates child net6",
             lambda: pair.swanctl("a", "--terminate", "--child", "net6"))
        step("a terminates IKE_SA gw", lambda: pair.swanctl("a", "--terminate", "--ike", "gw"))
        step("b terminates IKE_SA gw6", lambda: pair.swanctl("b", "--terminate", "--ike", "gw6"))
        rec.snapshot()
        step("a initiates net4 again", lambda: pair.initiate("net4", "gw"))
        step("b's charon stops (SIGTERM)", lambda: pair.stop("b"))
        rec.snapshot()
        rec.done.set()
        rec.thread.join(5)
    with open(out, "w") as f:
        json.dump(rec.records, f, indent=1)
        f.write("\n")
    return rec.records


if __name__ == "__main__":
    ok, why = charon_available()
    if not ok:
        sys.exit(f"charon not available: {why}")
    records = capture(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT)
    for r in records:
        print(f'{r["t"]:7.3f} {r["event"]:13} {r["step"]}')
