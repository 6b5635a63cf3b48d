"""One timed worker run, in its own process so that its peak RSS is its own.

Usage (by ``python -m bench``): ``python -m bench.worker_run SPEC_JSON``; prints
one JSON line with the result. The worker is :class:`pipeline.worker.Worker`,
in process, from the beginning of the topic with a fresh consumer group and
fresh targets. The clock runs from the first consumed batch until the worker
handled the batch of the last event (``Worker.on_batch``, after its commit),
so group join time is excluded and every write and offset commit of the
events is included. Over the same
span, :class:`bench.stages.StageClock` splits the worker's CPU time by stage
and :mod:`bench.machine` takes the CPU time of the stack's services and of
the whole machine.
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import pstats
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from bench import machine
from bench.stages import StageClock
from pipeline import kafkaclient, logs, startup
from pipeline.config import Config, parse
from pipeline.views import build_views
from pipeline.worker import Worker, build_sinks

logger = logging.getLogger(__name__)


class TimedConsumer:
    """Wraps the worker's consumer: times the run and stops after ``expected``."""

    def __init__(self, conf: dict[str, Any], expected: int, clock: StageClock) -> None:
        self._inner = kafkaclient.new_consumer(conf)  # the worker's merged conf
        self.clock = clock
        self.on_first: Any = None
        self.expected = expected
        self.seen = 0
        #: events of the batches the worker handled (written and committed)
        self.handled = 0
        self.first: float | None = None
        self.last: float | None = None
        self.on_done: Any = None
        self.deadline: float | None = None

    def batch_done(self, records: int) -> None:
        """The worker handled a batch (``Worker.on_batch``): the clock stops
        once the last event's batch is committed."""
        self.handled += records
        if self.handled >= self.expected:
            self._finish()

    def _finish(self) -> None:
        if self.last is None:
            self.last = time.perf_counter()
            self.clock.stop()
            self.on_done()

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if self.seen >= self.expected:
            # the worker may still be writing what it read (ahead): the
            # clock stops when it handled it (batch_done)
            if self.handled >= self.seen:
                self._finish()
            return []
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.expected = self.seen  # out of time: stop after what was done
            return self.consume(num_messages, timeout)
        want = min(num_messages, self.expected - self.seen)
        cpu = time.thread_time()
        msgs = self._inner.consume(want, timeout)
        if self.clock.on:
            self.clock.cpu["poll"] += time.thread_time() - cpu
        if msgs and self.first is None:
            self.first = time.perf_counter()
            self.on_first()
        self.seen += sum(1 for m in msgs if m.error() is None)
        return list(msgs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _status_kb(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of this process image, in KiB.

    ``ru_maxrss`` would not do: Linux keeps it across ``execve``, so a child
    would report the peak of the parent it was forked from.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _profile_summary(prof: cProfile.Profile, top: int = 18) -> dict[str, Any]:
    stats = pstats.Stats(prof)
    by_area: dict[str, float] = defaultdict(float)
    rows = []
    # Stats.stats is the profile's table; typeshed's Stats leaves it out.
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in (
        stats.stats.items()  # type: ignore[attr-defined]
    ):
        area = _area(path, func)
        by_area[area] += tottime
        rows.append((tottime, cumtime, calls, f"{_short(path)}:{line}({func})"))
    rows.sort(reverse=True)
    total = sum(by_area.values()) or 1.0
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
    return {
        "by_area": {
            k: round(v / total, 3)
            for k, v in sorted(by_area.items(), key=lambda kv: -kv[1])
        },
        "top_tottime": [
            {
                "tottime_s": round(t, 3),
                "cumtime_s": round(c, 3),
                "calls": n,
                "function": f,
            }
            for t, c, n, f in rows[:top]
        ],
        "cumulative_text": out.getvalue()[-6000:],
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _area(path: str, func: str) -> str:
    short = _short(path)
    if path == "~":
        if "socket" in func or "recv" in func or "send" in func or "poll" in func:
            return "socket / waiting"
        return "builtins: " + func.strip("<>").split(" of ")[0][:40]
    for prefix in (
        "pipeline/",
        "connectors/",
        "transforms/",
        "confluent_kafka",
        "redis",
        "elasticsearch",
        "elastic_transport",
        "urllib3",
        "pymongo",
        "bson",
        "json",
        "http",
        "socket",
        "ssl",
        "selectors",
    ):
        if short.startswith(prefix):
            return prefix.rstrip("/")
    return "other"


def run(spec: dict[str, Any]) -> dict[str, Any]:
    cfg: Config = parse(spec["config"], "<bench>")
    expected = expected_total = int(spec["expected"])
    views = build_views(cfg)
    sinks = build_sinks(cfg, spec["sinks"])
    clock = StageClock()
    clock.wrap_sinks(sinks)
    holder: dict[str, TimedConsumer] = {}
    worker = Worker(cfg, views, sinks)

    services = spec.get("services") or {}
    samples: list[dict[str, float]] = []

    def first_batch() -> None:
        samples.append(machine.sample(services))
        clock.install(worker)
        clock.start()

    def last_batch() -> None:
        samples.append(machine.sample(services))
        worker.stop()

    def factory(conf: dict[str, Any]) -> TimedConsumer:
        holder["c"] = TimedConsumer(conf, expected, clock)
        holder["c"].on_done = last_batch
        holder["c"].on_first = first_batch
        worker.on_batch = holder["c"].batch_done
        if spec.get("time_budget_s"):
            holder["c"].deadline = time.perf_counter() + float(spec["time_budget_s"])
        return holder["c"]

    worker.consumer_factory = factory
    budget = spec.get("time_budget_s")
    done = threading.Event()
    if budget:  # a store that never answers must not hold the run past its budget
        threading.Thread(
            target=_watchdog,
            args=(worker, holder, expected_total, float(budget) + 30, done),
            daemon=True,
        ).start()
    startup.tune_gc()  # as `readside worker` does (pipeline.worker.run_worker)
    rss_before = _status_kb("VmRSS")
    prof = cProfile.Profile() if spec.get("profile") else None
    started = time.perf_counter()
    if prof:
        prof.enable()
    try:
        worker.run()
    finally:
        done.set()
        if prof:
            prof.disable()
    consumer = holder["c"]
    if consumer.first is None or consumer.last is None:
        raise RuntimeError("the worker consumed no events")
    elapsed = consumer.last - consumer.first
    held = {
        s: sum(len(sinks[s].ids(v)) for v in views if s in views[v].cfg.sinks)
        for s in spec["sinks"]
    }
    for name, sink in sinks.items():
        for view in views:
            if name in views[view].cfg.sinks:
                getattr(sink, "drop", lambda _v: None)(view)
        sink.close()
    result: dict[str, Any] = {
        "events": consumer.seen,
        "complete": consumer.seen >= expected_total,
        "elapsed_s": elapsed,
        "events_per_s": consumer.seen / elapsed if elapsed > 0 else 0.0,
        "startup_s": consumer.first - started,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "rss_before_mb": rss_before / 1024,
        "docs_held": held,
        "batches": worker.batches,
        "cpu_us_per_event": clock.per_event_us(consumer.seen),
    }
    if len(samples) == 2 and consumer.seen:
        result["machine"] = machine.usage(samples[0], samples[1], consumer.seen)
    if prof:
        result["profile"] = _profile_summary(prof)
    return result


def _watchdog(
    worker: Worker,
    holder: dict[str, TimedConsumer],
    expected: int,
    budget_s: float,
    done: threading.Event,
) -> None:
    """Log the run's progress every 30 s; past ``budget_s`` (the consumer's own
    budget, plus time to start and to finish a batch) ask the worker to stop,
    so a run stuck before its first poll or in a store's backoff ends with its
    log rather than being killed without one."""
    deadline = time.monotonic() + budget_s
    while not done.wait(30):
        seen = holder["c"].seen if "c" in holder else 0
        if time.monotonic() > deadline:
            logger.warning(
                "over the time budget: stopping the worker (%d of %d events)",
                seen,
                expected,
            )
            worker.stop()
            return
        logger.warning("worker run in progress: %d of %d events", seen, expected)


def main() -> None:
    logs.setup(logging.WARNING)
    spec = json.loads(sys.argv[1])
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
