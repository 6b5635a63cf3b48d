"""The progress bar of ``readside snapshot``: rows, rows/s, ETA; a summary."""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.snapshot.state import SnapshotState

K = TypeVar("K", bound=Hashable)


def records_ahead(at: Mapping[K, int], ends: Mapping[K, int]) -> int:
    """Records from each partition's position in ``at`` up to its end.

    A catch-up's total is the rows it did plus this, sampled again after
    each batch: a position past its end (a batch carried records that
    arrived during the step, applied and counted too) adds nothing, so the
    rows shown never exceed the total, and equal it at the end.
    """
    return sum(max(0, ends[k] - o) for k, o in at.items() if k in ends)


class ProgressBar:
    """A rich progress bar on stderr (plain lines when it is not a terminal)."""

    def __init__(self, view: str) -> None:
        self.view = view
        console = Console(stderr=True)
        self.tty = console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.tty,
        )
        self._task: TaskID | None = None
        self._method: str | None = None
        self._last_line = 0

    def __enter__(self) -> ProgressBar:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, st: SnapshotState) -> None:
        rate = f"{st.rate():,.0f}"
        step = st.method if st.phase is None else f"{st.method} {st.phase}"
        if self._task is None or step != self._method:
            # A focus apply shows its load, then its purge, as separate bars;
            # a rebuild one bar per step.
            what = "snapshot" if st.method in ("chunks", "replay") else step
            self._method = step
            self._last_line = st.chunks
            self._task = self._progress.add_task(
                f"{what} {self.view}", total=st.total, rate=rate
            )
        self._progress.update(self._task, completed=st.rows, total=st.total, rate=rate)
        if not self.tty and (
            st.chunks - self._last_line >= 10 or st.state != "running"
        ):
            self._last_line = st.chunks
            total = "?" if st.total is None else f"{st.total:,}"
            print(
                f"{step} {self.view}: {st.rows:,}/{total} rows, {rate} rows/s",
                file=sys.stderr,
                flush=True,
            )

    def summary(self, st: SnapshotState) -> str:
        seconds = (st.updated_ms - st.started_ms) / 1000
        if st.state == "signalled" and st.where is not None:
            return (
                f"snapshot {self.view}: incremental-snapshot signal sent to Debezium "
                f"(where: {st.where}); rows arrive through the stream, follow them "
                "with `readside status`"
            )
        if st.method == "signal":
            if st.state == "done":
                return (
                    f"snapshot {self.view} done: every row came through the stream "
                    f"again and is applied in {','.join(st.sinks)} ({seconds:.1f}s); "
                    "load mark set"
                )
            return (
                f"snapshot {self.view}: incremental-snapshot signal sent to Debezium "
                "for every row; this command stopped following it before the "
                "workers applied it (see the log above), so the load mark is not "
                "set: the rows still arrive through the stream"
            )
        what = "done" if st.state == "done" else "stopped (run again to resume)"
        if st.method == "rebuild":
            counts = st.counts or {}
            return (
                f"rebuild {self.view} {what}: generation {st.generation} "
                f"(was {_gens(st.previous)}) in {','.join(st.sinks)}; "
                f"{counts.get('fill', 0):,} roots loaded, "
                f"{counts.get('catch-up', 0):,} + {counts.get('switched', 0):,} "
                "records caught up before + after the switch; "
                + ("old generation dropped" if st.state == "done" else f"at {st.phase}")
            )
        return (
            f"snapshot {self.view} {what}: {st.rows:,} rows in {st.chunks} chunks, "
            f"{seconds:.1f}s, {st.rate():,.0f} rows/s, method={st.method}, "
            f"sinks={','.join(st.sinks)}"
        )


def _gens(previous: dict[str, int] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((previous or {}).items()))
