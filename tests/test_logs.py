"""Service logging: journald priorities, repeated warnings held back and then counted."""

from __future__ import annotations

import io
import logging

from swan_offload import logs


def make(monkeypatch, journal: bool):
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    handler = logs.setup("info", out)
    return out, handler


def teardown_function():
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "swan-offload"]


def test_journald_lines_carry_the_syslog_priority(monkeypatch):
    out, _ = make(monkeypatch, journal=True)
    log = logging.getLogger("swan_offload.test")
    log.info("net/net#1 reqid 1: packet offload on eth0")
    log.error("reconcile failed: %s", "boom\nsecond line")
    log.debug("not at info level")
    assert out.getvalue().splitlines() == [
        "<6>swan_offload.test: net/net#1 reqid 1: packet offload on eth0",
        "<3>swan_offload.test: reconcile failed: boom",
        "<3>second line",
    ]


def test_terminal_lines_start_with_the_level(monkeypatch):
    out, _ = make(monkeypatch, journal=False)
    logging.getLogger("swan_offload.test").warning("device #%d refuses packet offload: %s", 3, "no room")
    assert out.getvalue() == "WARNING swan_offload.test: device #3 refuses packet offload: no room\n"


def test_a_repeated_warning_is_held_back_then_counted():
    clock = [0.0]
    f = logs.RateLimit(burst=3, interval=60, clock=lambda: clock[0])

    def rec(level, msg, *args, name="swan_offload.daemon"):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    passed = [f.filter(rec(logging.WARNING, "list-sas failed: %s", f"err {i}")) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7  # same template, whatever the arguments
    assert f.filter(rec(logging.WARNING, "another problem"))  # other templates are not held back
    assert f.filter(rec(logging.WARNING, "list-sas failed: %s", "x", name="swan_offload.other"))
    assert all(f.filter(rec(logging.INFO, "event %s", i)) for i in range(50))  # decisions are never dropped
    clock[0] = 61.0
    r = rec(logging.WARNING, "list-sas failed: %s", "back")
    assert f.filter(r)
    assert r.getMessage() == "list-sas failed: back (7 more like this held back in the last 60 s)"
    r2 = rec(logging.WARNING, "list-sas failed: %s", "again")
    assert f.filter(r2) and r2.getMessage() == "list-sas failed: again"


def test_rate_limit_is_installed_on_the_service_handler(monkeypatch):
    out, handler = make(monkeypatch, journal=False)
    log = logging.getLogger("swan_offload.test")
    for _ in range(20):
        log.error("cannot write status file %s: %s", "/run/x", "read-only")
    assert out.getvalue().count("cannot write status file") == 5
    assert any(isinstance(f, logs.RateLimit) for f in handler.filters)


def test_a_tally_names_the_first_lines_and_counts_the_rest_by_group(caplog):
    t = logs.Tally(logging.getLogger("swan_offload.test"), named=2)
    with caplog.at_level(logging.INFO, logger="swan_offload.test"):
        for i in range(5):
            t.info("CHILD_SA(s) in packet offload on eth0", "c%d: packet offload on eth0", i)
        t.info("CHILD_SA(s) retired", "c9: retired")
        t.close()
        t.info("CHILD_SA(s) retired", "c10: retired")  # closed: the count starts again
    assert caplog.messages == ["c0: packet offload on eth0", "c1: packet offload on eth0",
                               "and 3 more CHILD_SA(s) in packet offload on eth0", "and 1 more CHILD_SA(s) retired", "c10: retired"]
