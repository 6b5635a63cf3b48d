"""CPU time per stage of one worker run, cheaply: a few clock reads per batch.

:class:`StageClock` wraps methods of the worker's own objects (in the
benchmark's child process only) with :func:`time.thread_time` accumulators,
one per stage, read on the thread that runs the stage:

* ``poll``: the consumer's ``consume`` (the Python side of it: librdkafka
  fetches on threads of its own, counted under ``other threads``);
* ``decode``: :meth:`Processor.process` up to its call of ``_fill`` (the
  decode loop comes first: records to change events, redelivery check),
  and :meth:`Processor.decode_ahead` (the next batch decoded while the
  sinks write, :mod:`pipeline.readahead`);
* ``view``: the rest of ``process`` (routing each event to its views and
  building the ops, plus the unchanged-TOAST fill, empty here: every event
  inserts a whole row) less ``coalesce``;
* ``coalesce``: :func:`pipeline.processor.coalesce`;
* ``write``: each sink's ``write``, on the worker's helper thread;
* ``commit``: the worker's ``_commit`` (offsets, checkpoints).

The split is per batch, never per event, so it costs the run nothing
measurable. Beside the stages: ``other (main thread)`` is the worker
thread's CPU outside them (its loop, metrics, the batch handler), ``other
threads`` the process's CPU outside the worker's two threads (librdkafka's
fetch and producer threads, the store clients' threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import pipeline.processor

F = TypeVar("F", bound=Callable[..., Any])

STAGES = ("poll", "decode", "view", "coalesce", "write", "commit")


class StageClock:
    """Accumulates CPU seconds per stage while :attr:`on`."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.on = False
        self._fill_at: float | None = None
        self._started: tuple[float, float] | None = None
        self.totals: dict[str, float] = {}

    def timed(self, stage: str, fn: F) -> F:
        """``fn``, its thread's CPU time added to ``stage`` while on."""

        @wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.on:
                    self.cpu[stage] += time.thread_time() - start

        return run  # type: ignore[return-value]  # same signature as fn

    def install(self, worker: Any) -> None:
        """Wrap the stages of a running worker (its processor exists once it
        consumes); sinks are wrapped before the worker is built
        (:meth:`wrap_sinks`)."""
        processor = worker.processor
        process, fill = processor.process, processor._fill

        def timed_fill(*args: Any, **kwargs: Any) -> Any:
            self._fill_at = time.thread_time()
            return fill(*args, **kwargs)

        def timed_process(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            self._fill_at = None
            before = self.cpu["coalesce"]
            try:
                return process(*args, **kwargs)
            finally:
                if self.on:
                    end = time.thread_time()
                    split = start if self._fill_at is None else self._fill_at
                    self.cpu["decode"] += split - start
                    self.cpu["view"] += end - split - (self.cpu["coalesce"] - before)

        processor.process = timed_process
        processor._fill = timed_fill
        processor.decode_ahead = self.timed("decode", processor.decode_ahead)
        # process() looks coalesce up in its module at each call
        pipeline.processor.coalesce = self.timed(
            "coalesce", pipeline.processor.coalesce
        )
        worker._commit = self.timed("commit", worker._commit)

    def wrap_sinks(self, sinks: dict[str, Any]) -> None:
        for sink in sinks.values():
            sink.write = self.timed("write", sink.write)

    def start(self) -> None:
        """The clock runs from the first batch consumed..."""
        self._started = (time.process_time(), time.thread_time())
        self.on = True

    def stop(self) -> None:
        """... to the request for the batch after the last event."""
        if not self.on or self._started is None:
            return
        self.on = False
        process, main = time.process_time(), time.thread_time()
        self.totals = {
            "process": process - self._started[0],
            "main_thread": main - self._started[1],
        }

    def per_event_us(self, events: int) -> dict[str, float]:
        """CPU microseconds per event of each stage, the two remainders and
        the process's total."""
        if not events or not self.totals:
            return {}
        main_stages = sum(v for k, v in self.cpu.items() if k != "write")
        out = {k: v for k, v in self.cpu.items()}
        out["other (main thread)"] = self.totals["main_thread"] - main_stages
        out["other threads"] = (
            self.totals["process"] - self.totals["main_thread"] - self.cpu["write"]
        )
        out["total"] = self.totals["process"]
        return {k: round(v / events * 1e6, 1) for k, v in out.items()}
