"""Logging for a service: journald priorities, and repeated errors rate-limited.

Under systemd, stderr goes to journald (``$JOURNAL_STREAM`` is set): each line then starts
with ``<N>``, the syslog priority journald reads (sd-daemon(3)), and carries no timestamp of
its own (in a terminal, lines start with the level name). A warning or error that repeats (same logger and message template, whatever the
arguments: "list-sas failed: %s" while charon is away) passes ``burst`` times per
``interval``; the next one to pass says how many were held back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


class RateLimit(logging.Filter):
    """Lets ``burst`` records of one (logger, template) through per ``interval`` seconds, WARNING and up."""

    def __init__(self, burst: int = 5, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.interval, self.clock = burst, interval, clock
        self.windows: dict[tuple[str, str], list[float | int]] = {}  # key -> [window start, passed, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        w = self.windows.get(key)
        if w is None or now - w[0] >= self.interval:
            held = int(w[2]) if w else 0
            self.windows[key] = [now, 1, 0]
            if held:
                record.msg = f"{record.msg} ({held} more like this held back in the last {self.interval:g} s)"
            if len(self.windows) > 1000:  # unbounded templates cannot grow this forever
                self.windows = {k: v for k, v in self.windows.items() if now - v[0] < self.interval}
            return True
        if w[1] < self.burst:
            w[1] += 1
            return True
        w[2] += 1
        return False


class Tally:
    """One run at a hub decides thousands of CHILD_SAs: a line for each is noise to an
    operator and, under TCG, 40 % of a restart's time (issue 13). The first ``named`` lines
    pass; the rest are counted by group (a plural noun and what befell them: "CHILD_SA(s)
    retired"), one line per group at ``close``, at ``level``."""

    def __init__(self, logger: logging.Logger, named: int = 10, level: int = logging.INFO) -> None:
        self.logger, self.named, self.level = logger, named, level
        self.passed = 0
        self.more: Counter[str] = Counter()

    def naming(self) -> bool:
        """Whether the next line is named: a caller can skip building its arguments."""
        return self.passed < self.named

    def info(self, group: str, msg: str, *args: object) -> None:
        if self.naming():
            self.passed += 1
            self.logger.log(self.level, msg, *args)
        else:
            self.count(group)

    def count(self, group: str) -> None:
        self.more[group] += 1

    def close(self) -> None:
        for group, n in sorted(self.more.items()):
            self.logger.log(self.level, "and %d more %s", n, group)
        self.more.clear()
        self.passed = 0


def setup(level: str, stream: object = None) -> logging.Handler:
    """One stderr handler on the root logger; journald-style when systemd connected stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimit())
    handler.set_name("swan-offload")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "swan-offload"] + [handler]
    root.setLevel(getattr(logging, level.upper()))
    return handler
