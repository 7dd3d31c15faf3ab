"""Inside the lab VM: run the agent with a stack sampler, to see where a hub's CPU goes.

    sampler.py OUT ARGS...   swan-offload ARGS..., every thread's stack sampled each 10 ms;
                             OUT is rewritten every 5 s: per window, the busiest stacks

Each window (5 s) lists the 25 most frequent (thread, innermost 8 frames) with their share of
samples; a thread waiting in a blocking call (select, lock, queue) shows there as well, so
the window's "busy" line counts only samples whose innermost frame is Python work. Used by
bench/scale.py --profile; not part of the agent.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter

WAITS = {"select", "poll", "wait", "get", "recv", "recv_into", "accept", "sleep", "_wait_for_tstate_lock", "readinto", "serve_forever", "run"}


def stack(frame, depth: int = 8) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    out = []
    while frame is not None and len(out) < depth:
        co = frame.f_code
        out.append(f"{co.co_filename.rsplit('/', 2)[-1]}:{co.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return tuple(out)


def sample(out: str, every: float = 0.01, window: float = 5.0) -> None:
    me = threading.get_ident()
    counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
    n, start, history = 0, time.monotonic(), []
    while True:
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident != me:
                counts[(names.get(ident, str(ident)), stack(frame))] += 1
        n += 1
        time.sleep(every)
        if time.monotonic() - start >= window:
            lines = [f"== window {time.strftime('%H:%M:%S')} samples {n}"]
            for (name, st), k in counts.most_common(25):
                busy = st[0].split(":")[1] not in WAITS
                lines.append(f"{100 * k / n:5.1f}% {'BUSY' if busy else 'wait'} {name}: " + " < ".join(st))
            history = (history + ["\n".join(lines)])[-60:]
            with open(out, "w") as f:
                f.write("\n\n".join(history) + "\n")
            counts, n, start = Counter(), 0, time.monotonic()


def main() -> int:
    out, args = sys.argv[1], sys.argv[2:]
    threading.Thread(target=sample, args=(out,), name="sampler", daemon=True).start()
    from swan_offload.cli import main as agent

    return agent(args)


if __name__ == "__main__":
    sys.exit(main())
