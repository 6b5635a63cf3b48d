"""The background writes of ``python -m bench api``, in a process of its own.

``python -m bench.api_writes DSN RATE LOW HIGH`` commits ``UPDATE items SET
price = price + 1 WHERE id = %s`` (a random id in ``[LOW, HIGH]``), one
autocommitted transaction each, at ``RATE`` per second until its standard
input closes; then prints one JSON line: ``writes``, ``seconds``,
``writes_per_s`` and ``behind_ms`` (how late the last write was against its
slot, at most). A write that fails fails the run (exit 1), rather than
leaving it quietly slower.

The writes follow one schedule, write ``i`` due at ``start + i / RATE``, and
are spread over enough connections (one thread each) that one slow commit
does not hold the next: a write that misses its slot goes at once, so the
rate is reached whenever PostgreSQL can take it. A process of its own keeps
the writer off the interpreter of the probes it loads.
"""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time

import psycopg

#: Commits per second one connection is asked for at most.
PER_CONNECTION = 50


class Schedule:
    """Hands out write slots: ``start + i / rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.issued = 0
        self.behind = 0.0
        self._lock = threading.Lock()

    def next_slot(self) -> float:
        with self._lock:
            slot = self.start + self.issued / self.rate
            self.issued += 1
            self.behind = max(self.behind, time.monotonic() - slot)
            return slot


def run(
    dsn: str, rate: float, low: int, high: int, stop: threading.Event
) -> dict[str, float]:
    schedule = Schedule(rate)
    done = [0]
    failed: list[BaseException] = []
    lock = threading.Lock()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    wait = schedule.next_slot() - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        return
                    conn.execute(
                        "UPDATE items SET price = price + 1 WHERE id = %s",
                        (rng.randint(low, high),),
                    )
                    with lock:
                        done[0] += 1
        except BaseException as exc:  # the run fails, not quietly slower
            failed.append(exc)
            raise

    threads = [
        threading.Thread(target=write, args=(n,), daemon=True)
        for n in range(math.ceil(rate / PER_CONNECTION))
    ]
    for thread in threads:
        thread.start()
    sys.stdin.read()  # the parent closes it to stop the writes
    stop.set()
    elapsed = time.monotonic() - schedule.start
    for thread in threads:
        thread.join(10)
    if failed:
        raise RuntimeError(f"a background writer failed: {failed[0]!r}")
    return {
        "writes": done[0],
        "seconds": elapsed,
        "writes_per_s": done[0] / elapsed,
        "behind_ms": schedule.behind * 1000,
    }


def main() -> None:
    dsn, rate, low, high = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:5])
    print(json.dumps(run(dsn, rate, low, high, threading.Event())), flush=True)


if __name__ == "__main__":
    main()
