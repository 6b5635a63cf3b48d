"""One timed ``readside snapshot VIEW --sink S`` run, in its own process.

Usage (by ``python -m bench snapshot``): ``python -m bench.snapshot_run SPEC``;
prints one JSON line. The run is :class:`pipeline.snapshot.Loader` exactly as
the CLI builds it (minus the progress bar), timed from ``Loader.run()`` to
its return. Cheap wrappers split the wall time into reading (PostgreSQL
statements for aggregate views, Kafka ``consume`` for table views), decoding
(table views), sink writes and progress records; the rest is building the
documents. An aggregate view's chunks are read and built in a thread beside
the writes (:class:`~pipeline.snapshot.prefetch.ReadAhead`) and written by
writer threads (:class:`~pipeline.snapshot.prefetch.InOrder`): the reads and
documents built (``build``) and the writers' writes (``write``, summed over
writers) overlap the main thread's waits for a chunk (``wait``), for the
writers (``writers``) and its progress records; ``other`` is the main
thread's rest. A table view's replay consumes and decodes in such a thread
too, and writes in the main thread; with ``writers`` above 1 it runs in
processes of its own, which these wrappers do not reach (the report splits
the one-writer runs only). Peak RSS is this process's ``VmHWM``, and the
largest of its replay processes'. The targets are dropped
after the run (not timed). With ``"rebuild": true`` in the spec, a timed
``--rebuild`` of the loaded view follows (a second generation beside it).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer

from bench.worker_run import _status_kb
from pipeline import kafkaclient, logs
from pipeline.aggregate import AggregateView
from pipeline.aggregate import reader as reader_mod
from pipeline.config import load
from pipeline.processor import Processor
from pipeline.snapshot import Loader, Options, SnapshotLog
from pipeline.snapshot.prefetch import InOrder, ReadAhead
from pipeline.snapshot.rebuild import Rebuild
from pipeline.snapshot.rejects import Rejects
from pipeline.startup import tune_gc
from pipeline.worker import build_sinks

SPENT: dict[str, float] = defaultdict(float)


def _timed(area: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[area] += time.perf_counter() - start

    return wrapper


class _TimedConsumer(Consumer):
    def consume(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().consume(*args, **kwargs)
        finally:
            SPENT["read"] += time.perf_counter() - start


def _timed_iter(area: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    """``fn``'s iterator, the time each item took to come counted in ``area``."""

    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        items = fn(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                SPENT[area] += time.perf_counter() - start
            yield item

    return wrapper


def _instrument() -> None:
    # The methods are wrapped in place (on their classes) to time them in
    # this child process; mypy refuses any assignment to a method.
    r = reader_mod.Reader
    r.query = _timed("read", r.query)  # type: ignore[method-assign]
    r.begin = _timed("read", r.begin)  # type: ignore[method-assign]
    # An aggregate view's chunks are read and built in a thread of their
    # own (ReadAhead) while the main thread writes: "read" and "build" are
    # that thread's, "wait" the main thread's time waiting for a chunk.
    # The chunks are written by InOrder's writers ("write" adds up their
    # times, which overlap); "writers" is the main thread's time in InOrder.
    v = AggregateView
    v.ops_from_rows = _timed("build", v.ops_from_rows)  # type: ignore[method-assign]
    ReadAhead.__iter__ = _timed_iter("wait", ReadAhead.__iter__)  # type: ignore[method-assign]
    InOrder.submit = _timed("writers", InOrder.submit)  # type: ignore[method-assign]
    InOrder.drain = _timed("writers", InOrder.drain)  # type: ignore[method-assign]
    Rejects.write = _timed("write", Rejects.write)  # type: ignore[method-assign]
    SnapshotLog.save = _timed("progress", SnapshotLog.save)  # type: ignore[method-assign]
    Processor.process = _timed("decode", Processor.process)  # type: ignore[method-assign]
    # The replay's consumer is built by pipeline.kafkaclient.
    setattr(kafkaclient, "Consumer", _TimedConsumer)  # noqa: B010 - times consume()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    cfg = load(spec["config_path"])
    _instrument()
    opts = Options(
        spec["view"],
        spec.get("where"),
        spec["sinks"],
        int(spec.get("chunk_size", 1000)),
        restart=True,
        writers=int(spec.get("writers", 2)),
    )
    loader = Loader(cfg, opts, lambda _st: None)
    tune_gc()  # as `readside snapshot` does
    rss_before = _status_kb("VmRSS")
    start = time.perf_counter()
    st = loader.run()
    elapsed = time.perf_counter() - start
    rebuilt = _rebuild(cfg, opts) if spec.get("rebuild") else {}
    held = {}
    for name, sink in build_sinks(cfg, spec["sinks"]).items():
        sink.open()
        if spec.get("count_held"):
            held[name] = len(sink.ids(spec["view"]))
        getattr(sink, "drop", lambda _v: None)(spec["view"])
        sink.close()
    spent = {k: round(v, 3) for k, v in SPENT.items()}
    # the main thread's own rest (an aggregate view's reads are beside it)
    beside = ("read", "build", "decode", "write") if "wait" in SPENT else ()
    main = sum(v for k, v in SPENT.items() if k not in beside)
    spent["other"] = round(elapsed - main, 3)
    return {
        "state": st.state,
        "method": st.method,
        "rows": st.rows,
        "chunks": st.chunks,
        "elapsed_s": elapsed,
        "rows_per_s": st.rows / elapsed if elapsed > 0 else 0.0,
        "spent_s": spent,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        # the largest of its replay processes (a table view's --writers > 1)
        "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        / 1024,
        "rss_before_mb": rss_before / 1024,
        "docs_held": held,
        **rebuilt,
    }


def _rebuild(cfg: Any, opts: Options) -> dict[str, Any]:
    """Time ``readside snapshot VIEW --rebuild`` over the view just loaded:
    a second generation filled beside it, switched in, the first dropped."""
    rebuild = Rebuild(cfg, opts, lambda _st: None, drop_grace_s=0.0)
    start = time.perf_counter()
    st = rebuild.run()
    elapsed = time.perf_counter() - start
    roots = (st.counts or {}).get("fill", 0)
    return {
        "rebuild_state": st.state,
        "rebuild_generation": st.generation,
        "rebuild_s": elapsed,
        "rebuild_rows": roots,
        "rebuild_rows_per_s": roots / elapsed if elapsed > 0 else 0.0,
    }


def main() -> None:
    logs.setup(logging.WARNING)
    print(json.dumps(run(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
