"""The daemon: VICI events and XFRM notifications in, one reconcile at a time out.

Two reader threads (VICI listener, XFRM monitor) only enqueue; the main thread is the
single writer to the kernel (but for the monitor's rekey follower). A burst of events
names its IKE_SAs: only those are asked of charon (``list-sas`` by ``ike-id``) and planned,
against the kernel mirror the monitor keeps. A full resync (``list-sas`` of everything,
one dump) runs at start, after a reconnect, a device event, lost notifications, and every
``resync_seconds`` as the safety net: the same planner and reconciler either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import capability, control, logs, metrics, model, sdnotify, vici_source
from . import mirror as mi
from .backend import Backend, NetlinkBackend
from .charon_mirror import CharonMirror, Scope, event_scope
from .config import Config
from .ledger import Ledger
from .links import LinkMonitor
from .mirror import Change, KernelMirror
from .monitor import XfrmMonitor
from .reconciler import Reconciler
from .xfrm import objects as o

log = logging.getLogger("swan_offload.daemon")

NATIVE_PACKET_VERSION = (5, 9, 10)
# how old the copy of an offloaded SA may grow: a device loss restores it from that read. A hub's
# read (thousands of SAs) is spaced to cost at most HELD_REFRESH_SHARE of a core; restores stay
# safe however old the read, as they skip restore_max_pps x the time since (Reconciler._restore)
HELD_REFRESH_SECONDS = 1.0
HELD_REFRESH_SHARE = 0.01
XFRM_SETTLE_SECONDS = 0.5
# systemd hears READY=1 after the first reconcile, or after this long without charon
READY_WITHOUT_CHARON_SECONDS = 5.0
# while the first resync runs (list-sas and a reconcile of thousands of CHILD_SAs can outlast
# TimeoutStartSec), systemd is asked for this much more time, every EXTEND_EVERY seconds
EXTEND_SECONDS = 30.0
EXTEND_EVERY = 10.0
# after events the status file (all CHILD_SAs: megabytes at hub scale) is rewritten at most
# every STATUS_EVERY, or STATUS_SHARE of a core when writing it takes longer; a full resync
# always writes it, and the control socket answers live
STATUS_EVERY = 1.0
STATUS_SHARE = 0.02
# objects a drift warning names (identities only); the count says how many more
DRIFT_NAMED = 5


def previous_children(status_file: str) -> set[tuple[int, int]]:
    """(IKE_SA uniqueid, CHILD_SA uniqueid) of every row of an earlier run's status file; a
    hint only: a CHILD_SA gone since is simply not found."""
    try:
        rows = json.loads(Path(status_file).read_text())["children"]
        return {(int(r["ike_uniqueid"]), int(r["uniqueid"])) for r in rows if r.get("ike_uniqueid")}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _libc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_trim()


def release_memory() -> None:
    """After a full resync: its transient objects (list-sas, two dumps, a plan of every
    CHILD_SA: ~100 MB at 10,000) are garbage; collect them and hand the freed pages back
    (glibc keeps them otherwise). Natively at 10,000 that took RSS from 103 to 75 MB; in the
    lab the settled agent stayed at 192 MB (197 before), so what holds the rest is not
    traced yet (docs/benchmarks.md)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


class Daemon:
    def __init__(self, cfg: Config, netns: str | None = None, backend: Backend | None = None, caps: capability.KernelCaps | None = None) -> None:
        self.cfg = cfg
        self.q: queue.Queue[Any] = queue.Queue()
        self.backend: Backend = backend or NetlinkBackend(netns)
        self.caps = caps or capability.probe(self.backend)
        self.listener = vici_source.Listener(cfg.vici_socket, self.q, cfg.reconnect_max_seconds)
        # kernel notifications only exist for a real kernel
        port = getattr(getattr(self.backend, "sock", None), "port", None)
        # reads (held copies, scrapes) go over their own socket, outside self.lock: a rekey
        # followed by the monitor thread must never wait for a dump
        self.reader: NetlinkBackend | None = NetlinkBackend(netns) if port is not None else None
        self.reader_lock = threading.Lock()
        written = getattr(getattr(self.backend, "sock", None), "written", None)
        self.monitor = XfrmMonitor(self.q, port, netns, self._follow, written=written) if port is not None else None
        # the reconciler's collaborators, the daemon's too: the monitor's notifications feed the
        # kernel mirror (_apply_inbox), status reads the ledger. The reconciler is driven from
        # the main and the monitor thread; a full run takes the lock per batch of CHILD_SAs
        # (Reconciler._run), so the rekey follower never waits for a whole hub
        self.mirror = KernelMirror()
        self.ledger = Ledger()
        self.lock = threading.RLock()
        self.status_lock = threading.Lock()  # one status file writer at a time (write_status)
        self.reconciler = Reconciler(self.backend, cfg, self.caps, self.mirror, self.ledger, self.lock, mirror_fed=self.monitor is not None,
                                     between=self._apply_inbox)
        self.charon = CharonMirror()
        # (IKE_SA, CHILD_SA) uniqueids the last run's status listed: what a restart can read one
        # by one of an IKE_SA charon cannot list whole (vici_source.VICI_MESSAGE_MAX)
        self.hints = previous_children(cfg.status_file)
        self.full_due = True  # the next sync reads everything
        self.full_spent = 0.0  # seconds the last full resync took (cfg.resync_share)
        self.scope = Scope()  # what events named since the last sync
        self.status_due = 0.0  # a status write left for later (monotonic time it was due), 0: none
        self.last_status = 0.0
        self.status_every = STATUS_EVERY
        self.links = LinkMonitor(self.q, netns, self._link_changed) if port is not None else None
        self.stopping = threading.Event()
        self.connected = False
        self.charon_version = ""
        self.last_event = 0.0
        self.last_sync = 0.0
        self.sync_errors = 0
        self.unreadable = 0  # list-sas entries that did not parse, over the daemon's life
        self.last_unreadable: list[str] = []  # those of the last resync, for status
        self.metrics_server: Any = None
        self.control: control.ControlServer | None = None
        self.ready = False
        self.said = ""  # the last STATUS= systemd heard

    def stop(self) -> None:
        self.stopping.set()
        self.q.put(("stop", None))

    def run(self) -> int:
        """Serve until stop(); 1 when another daemon already answers on the control socket."""
        if self.cfg.control_socket:
            self.control = control.ControlServer(self.cfg.control_socket, {"status": self._status_locked})
            try:
                self.control.start()
            except OSError as e:
                log.error("control socket %s: %s", self.cfg.control_socket, e)
                return 1
        level = log.info if self.caps.packet_offload else log.warning
        level("%s", self.caps.reason)
        for t in (self.monitor, self.links):
            if t:
                t.start()
        self.listener.start()
        self._serve_metrics()
        dirty = False
        started = last_item = next_refresh = time.monotonic()
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if not self.ready and not self.connected and now - started >= READY_WITHOUT_CHARON_SECONDS:
                    self._tell_systemd(f"charon not reachable at {self.cfg.vici_socket}; kernel left as it is, waiting")
                if now >= next_refresh:
                    self._refresh_held()
                    spent = time.monotonic() - now
                    next_refresh = now + max(HELD_REFRESH_SECONDS, spent / HELD_REFRESH_SHARE)
                # the safety net: every change already brings a resync (events, notifications, links)
                # waits resync_seconds after the last sync ends, and at a hub at least the last
                # full one's duration / resync_share: at 10,000 CHILD_SAs under the lab's emulation
                # one takes minutes, and counted from before it, the next was due as soon as it ended
                idle = max(self.cfg.resync_seconds, self.full_spent / self.cfg.resync_share)
                if self.status_due and now - self.last_status >= self.status_every:
                    self.write_status()
                    self._tell_systemd(self._summary())
                try:
                    kind, payload = self.q.get(timeout=max(0.0, min(last_item + idle, next_refresh) - now))
                    last_item = time.monotonic()
                except queue.Empty:
                    if time.monotonic() < last_item + idle:
                        continue  # only the held copies were due
                    kind, payload = "timer", None
                    last_item = time.monotonic()
                dirty |= self._handle(kind, payload)
                # let a burst of events settle, then reconcile once; kernel notifications come in
                # rekey-long bursts (expire, new SAs, policy updates, deletes) whose new SAs the
                # monitor already follows: a reconcile inside one would hold the lock it needs
                deadline = time.monotonic() + (XFRM_SETTLE_SECONDS if kind == "xfrm" else 0.05)
                while time.monotonic() < deadline:
                    try:
                        dirty |= self._handle(*self.q.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        break
                if self.listener.stuck(max(5.0, 10 * self.listener.poll)):
                    log.error("VICI listener stuck inside a frame; dropping the session")
                    self.listener.kick()
                if dirty and self.connected and not self.stopping.is_set():
                    dirty = not self.sync()
                    last_item = time.monotonic()  # idle counts from the end of the work, not from its cause
        finally:
            sdnotify.notify("STOPPING=1")
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            if self.control is not None:
                self.control.close()
            self.listener.stop()
            for t in (self.monitor, self.links):
                if t:
                    t.stop()
            if self.reader is not None:
                with self.reader_lock:
                    self.reader.close()
            self.write_status()
        return 0

    def _handle(self, kind: str, payload: Any) -> bool:
        """Note what a queue item asks for (a full resync, or some IKE_SAs); True if any."""
        if kind == "connected":
            self.connected = True
            self._on_connect()
            self.full_due = True
            return True
        if kind == "disconnected":
            self.connected = False
            log.warning("charon went away (%s); kernel objects kept, reconnecting", payload)
            self.write_status()
            return False
        if kind == "event":
            name, msg, at = payload
            self.last_event = at
            log.info("event %s", vici_source.describe_event(name, msg))
            self._announced(name, msg, at)
            named = event_scope(name, msg)
            if named is None:
                self.full_due = True
            else:
                self.scope |= named
            return True
        if kind == "xfrm":
            # someone else changed the kernel: the IKE_SAs holding those reqids are planned again
            # (reqids no CHILD_SA of charon's has yet are a new CHILD_SA's: its event follows)
            if payload is None:
                self.full_due = True
                return True
            return True  # the mirror tells which CHILD_SAs, from the objects' reqids old and new (touched)
        if kind == "link":  # the link monitor restored what a loss took (_link_changed): now read everything
            self.full_due = True
            return True
        if kind == "timer":
            self.full_due = True
            return True
        return False

    def _announced(self, name: str, msg: Any, at: float) -> None:
        """charon says a CHILD_SA is up (or a rekey made one): its promotion latency starts here."""
        try:
            if name == "child-updown" and msg.get("up") == b"yes":
                kids = model.children_of(msg)
            elif name == "child-rekey":
                kids = [new for _old, new in model.rekeyed_children(msg)]
            else:
                return
        except (ValueError, AttributeError):  # model.MalformedMessage among them
            return  # the resync that follows reads list-sas, which says what is what
        with self.lock:
            for ch in kids:
                self.ledger.announce(ch.key, at)

    def _serve_metrics(self) -> None:
        if not self.cfg.metrics_listen:
            return
        collector = metrics.AgentCollector(self._metrics_snapshot, self._metrics_states)
        try:
            self.metrics_server, _thread = metrics.serve(collector, self.cfg.metrics_listen)
        except OSError as e:
            log.error("cannot serve metrics on %s: %s", self.cfg.metrics_listen, e)
            return
        log.info("metrics on http://%s/metrics", self.cfg.metrics_listen)

    def _metrics_snapshot(self) -> metrics.Snapshot:
        """HTTP thread: the reconciler's records, copied under the lock."""
        with self.lock:
            r, led = self.reconciler.stats(), self.ledger
            latencies = led.take_latencies()
            agent = metrics.Agent(self.connected, self.last_event, r.runs, r.drift_repaired, self.monitor.seen if self.monitor else 0, dict(led.decisions), latencies, self.unreadable)
            return metrics.Snapshot(list(led.outcomes.values()), agent)

    def _metrics_states(self) -> list[Any]:
        return self._read_states()[0]

    def _read_states(self) -> tuple[list[Any], float]:
        """One lean state dump (counters, no keys) and when it was taken, on the reader socket
        (or under the lock without one)."""
        if self.reader is None:
            with self.lock:
                return self.backend.dump_counters(), time.monotonic()
        with self.reader_lock:
            read_at = time.monotonic()
            return self.reader.dump_counters(), read_at

    def _refresh_held(self) -> None:
        """Keep the copies of offloaded SAs at most HELD_REFRESH_SECONDS old (see Reconciler.refresh_held)."""
        if not self.reconciler.holds_copies():
            return
        try:
            states, read_at = self._read_states()
            with self.lock:
                self.reconciler.refresh_held(states, read_at)
        except OSError as e:
            log.warning("could not read the offloaded SAs: %s", e)

    def _link_changed(self, ifindex: int, up: bool) -> None:
        """Link monitor thread: a device that went down took its offloaded SAs; those of the
        CHILD_SAs the charon mirror knows go back in software now, from the held copies, between
        two CHILD_SAs of whatever run the main thread is in (which then stops: its plan was
        made for the device that is gone). The full resync the queued link event asks for
        reads charon and the kernel afterwards."""
        if not up:
            self.reconciler.interrupt()
        lost = False
        try:
            with self.lock:
                lost = self.reconciler.link_changed(ifindex, up)
                if not up and self.charon.loaded:
                    self.reconciler.restore_now(list(self.charon.children.values()))
        except OSError as e:
            log.error("could not restore the SAs of device #%d: %s", ifindex, e)
        if lost:
            # the status file said packet for them: not until the main thread's resync ends
            # (18 s at 1,000 CHILD_SAs under TCG), now
            self.write_status(locked=True)

    def _follow(self, msg: Any) -> None:
        """Monitor thread: a new SA of charon's, maybe a rekey of an offloaded CHILD_SA."""
        if not self.connected:
            return
        try:
            with self.lock:
                self.reconciler.follow(o.state_from_msg(msg))
        except (OSError, ValueError, KeyError) as e:
            log.warning("could not offload a new SA on arrival: %s", e)

    def _on_connect(self) -> None:
        try:
            v = vici_source.version(self.cfg.vici_socket)
        except vici_source.VICI_ERRORS as e:
            log.warning("version query failed: %s", e)
            return
        self.charon_version = f"{v.get('daemon', 'charon')} {v.get('version', '?')}"
        log.info("connected to %s over %s", self.charon_version, self.cfg.vici_socket)
        if capability.version_tuple(v.get("version", "")) >= NATIVE_PACKET_VERSION:
            log.info("charon %s can offload packets itself (hw_offload = packet); SAs it offloads are reported as native and left alone", v.get("version"))

    def sync(self) -> bool:
        """One resync: list-sas, dump the kernel, apply the plan. False if charon could not be read."""
        if self.ready:
            return self._sync()
        done = threading.Event()
        t = threading.Thread(target=self._extend_start, args=(done,), name="sd-extend", daemon=True)
        t.start()
        try:
            return self._sync()
        finally:
            done.set()
            t.join()

    def _extend_start(self, done: threading.Event) -> None:
        """Until the first resync ends: tell systemd the start goes on, and what it is doing."""
        while True:
            sdnotify.notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_SECONDS * 1e6)}", "STATUS=first resync with charon running (list-sas, kernel dump, reconcile)")
            if done.wait(EXTEND_EVERY):
                return

    def _sync(self) -> bool:
        """A full resync when one is due (or the mirrors cannot serve), else the IKE_SAs the
        events since the last one named. False if charon could not be read."""
        mirror = self.mirror
        if self.full_due or not self.charon.loaded or not (mirror.valid or self.monitor is None):
            return self._sync_all()
        for _round in range(3):
            scope, self.scope = self.scope, Scope()
            # the CHILD_SAs whose kernel objects others changed (old and new reqids, mirror.py):
            # asked of charon too, so a rekeyed one charon deleted since is known gone
            self._catch_up()
            self._apply_inbox()
            scope |= self.charon.scope_of_reqids(mirror.take_touched())
            if not mirror.valid:  # the stream broke: read everything
                self.full_due = True
                return False
            if not scope:
                return True
            try:
                answer = vici_source.list_sas(self.cfg.vici_socket, scope.queries(), self.charon.child_ids(scope.ikes))
            except vici_source.VICI_ERRORS as e:
                log.warning("list-sas of %d IKE_SA/CHILD_SA(s) failed: %s", len(scope.queries()), e)
                self.scope |= scope
                return False
            self._note_unreadable(answer, scoped=True)
            with self.lock:  # the link monitor reads the charon mirror (_link_changed)
                self.charon.update(scope, answer)
            self._catch_up()
            with self.lock:
                self._apply_inbox()
                if not mirror.valid:
                    self.full_due = True
                    return False
                if not self._guarded(partial(self.reconciler.reconcile_scope, self.charon, scope)):
                    return False
            self._status_changed()
            self._rekey_restored()
            if not mirror.touched and not self.scope:
                break
        return True

    def _sync_all(self) -> bool:
        """list-sas of everything, the kernel mirror reloaded from one dump, one reconcile."""
        started = time.monotonic()
        try:
            return self._resync_all()
        finally:
            self.full_spent = time.monotonic() - started

    def _resync_all(self) -> bool:
        try:
            # the CHILD_SAs to read one by one where charon cannot list an IKE_SA whole: those
            # the mirror holds and those events named since (this resync takes their place)
            known = self.charon.child_ids()
            for ike_id, uid in self.scope.children | self.hints:
                known.setdefault(ike_id, set()).add(uid)  # each asked once, known or named twice
            sas = vici_source.list_sas(self.cfg.vici_socket, known=known)
        except vici_source.VICI_ERRORS as e:
            log.warning("list-sas failed: %s", e)
            return False
        self._note_unreadable(sas, scoped=False)
        self.full_due, self.scope = False, Scope()
        with self.lock:
            self.charon.load(sas)
        self.hints = set()  # the mirror knows what they named now

        def run() -> None:
            self._reload_mirror()
            self.reconciler.reconcile(sas)

        if not self._guarded(run):
            return False
        self.write_status()
        self._tell_systemd(self._summary())
        self._rekey_restored()
        release_memory()
        return True

    def _guarded(self, run: Callable[[], object]) -> bool:
        """Run a reconcile; a kernel error is counted, asks for a full resync next, and is False."""
        try:
            run()
        except OSError as e:
            self.sync_errors += 1
            self.full_due = True
            log.error("reconcile failed: %s", e)
            return False
        self.last_sync = time.time()
        return True

    def _reload_mirror(self) -> None:
        """The kernel mirror from one dump taken after every notification sent before it:
        those after it replay onto it, which converges (mirror.py). What it had wrong and did
        not change while the dump ran is drift."""
        if self.monitor is None:
            return
        self._catch_up()
        self._apply_inbox()
        wrong = self.reconciler.reload()
        self._catch_up()
        for ch in list(self.monitor.inbox):
            if isinstance(ch, Change):
                wrong.pop((ch.kind, ch.key), None)
        if wrong:
            self.mirror.drift += len(wrong)
            some = "; ".join(f"{mi.describe(kind, key)} {how}" for (kind, key), how in list(wrong.items())[:DRIFT_NAMED])
            log.warning("kernel mirror differed from the kernel in %d object(s), reloaded: %s%s", len(wrong), some,
                        " ..." if len(wrong) > DRIFT_NAMED else "")

    def _note_unreadable(self, sas: model.SaList, scoped: bool) -> None:
        for err in sas.errors:
            log.error("list-sas: %s; that IKE_SA's kernel objects are left as they are", err)
        self.unreadable += len(sas.errors)
        if not scoped or sas.errors:
            self.last_unreadable = list(sas.errors)

    def _catch_up(self) -> None:
        """Wait until the monitor has queued every notification sent so far (not holding the
        lock: the monitor's follower may be waiting for it)."""
        if self.monitor is not None and not self.monitor.barrier():
            self.mirror.invalidate("the XFRM monitor did not answer")

    def _apply_inbox(self) -> None:
        """The queued notifications into the kernel mirror, in the kernel's order."""
        if self.monitor is None:
            return
        inbox, mirror = self.monitor.inbox, self.mirror
        while inbox:
            ch = inbox.popleft()
            if isinstance(ch, Change):
                mirror.apply(ch)
            else:
                mirror.invalidate(ch)

    def _status_changed(self) -> None:
        """After an event: the status file and systemd's STATUS at most every status_every."""
        if time.monotonic() - self.last_status >= self.status_every:
            self.write_status()
            self._tell_systemd(self._summary())
        elif not self.status_due:
            self.status_due = time.monotonic()

    def _summary(self) -> str:
        modes = Counter(out.mode for out in self.ledger.outcomes.values())
        return f"{len(self.ledger.outcomes)} CHILD_SA(s)" + "".join(f", {n} {m}" for m, n in sorted(modes.items()))

    def _tell_systemd(self, status: str) -> None:
        """READY=1 the first time (the first reconcile, or charon still away), STATUS= on change."""
        fields = [] if self.ready else ["READY=1"]
        if status != self.said:
            fields.append(f"STATUS={status}")
        if fields:
            sdnotify.notify(*fields)
        self.ready, self.said = True, status

    def _rekey_restored(self) -> None:
        """Children put back in software after a device loss carry an estimated sequence number: new keys end that."""
        said = logs.Tally(log)
        for ch in self.reconciler.take_restored():
            if not self.cfg.rekey_after_restore:
                continue
            try:
                vici_source.rekey_child(self.cfg.vici_socket, ch.uniqueid)
                said.info("CHILD_SA(s) charon was asked to rekey (restored after a device loss)", "%s: asked charon to rekey it (restored after a device loss)", ch.label)
            except vici_source.VICI_ERRORS as e:
                log.warning("%s: rekey request failed: %s", ch.label, e)
        said.close()

    def _status_locked(self) -> dict[str, Any]:
        """Control thread: the same status, read under the lock the writers hold."""
        with self.lock:
            return self.status()

    def status(self) -> dict[str, Any]:
        r = self.reconciler.stats()
        return {
            "agent": {
                "pid": os.getpid(),
                "vici_connected": self.connected,
                "charon": self.charon_version,
                "kernel": self.caps.release,
                "packet_offload": self.caps.packet_offload,
                "kernel_reason": self.caps.reason,
                "reconcile_runs": r.runs,
                "scoped_reconciles": r.scoped_runs,  # of those, an event's IKE_SAs only
                "kernel_mirror": self._mirror_status(),
                "last_sync": round(self.last_sync, 3),
                "last_event": round(self.last_event, 3),
                "refusing_devices": {str(k): v for k, v in r.refusing.items()},
                "vici_unreadable": self.last_unreadable,
            },
            "children": [o.as_dict() for o in sorted(self.ledger.outcomes.values(), key=lambda o: (o.ike, o.child, o.uniqueid))],
        }

    def _mirror_status(self) -> dict[str, Any]:
        m = self.mirror
        return {"states": len(m.states), "policies": len(m.policies), "fed": self.monitor is not None,
                "valid": m.valid, "why": m.why, "loads": m.loads, "drift": m.drift}

    def write_status(self, locked: bool = False) -> None:
        """The status file. One writer at a time, each reading the records when it writes:
        the link thread's write after a device loss is never overwritten by an older one.
        ``locked``: read them under the lock (a thread other than the main one)."""
        with self.status_lock:
            started = time.monotonic()
            self.last_status, self.status_due = started, 0.0
            try:
                self._write_status(locked)
            finally:
                self.status_every = max(STATUS_EVERY, (time.monotonic() - started) / STATUS_SHARE)

    def _write_status(self, locked: bool) -> None:
        path = Path(self.cfg.status_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = path.with_suffix(".tmp")
            if locked:
                with self.lock:
                    doc = self.status()
            else:
                doc = self.status()
            # compact: with indent, json encodes in Python, not C (3x slower at 10,000 CHILD_SAs)
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write status file %s: %s", path, e)
