"""Both tools live: how soon each shows a stream of single-row updates.

pgsync as a daemon (``-d``) and a readside worker (Debezium connector,
in-process :class:`~pipeline.worker.Worker` into Elasticsearch) both run
while ``--changes`` single-row UPDATEs of ``order_lines`` (one per root)
commit from a writer thread; both indices are refreshed and counted every
~0.1 s meanwhile: the time until each shows all of them, and each change's
commit-to-visible time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import elasticsearch
import psycopg

from bench.pgsync.readside import readside_alias
from bench.pgsync.tool import PgSync
from bench.snapshot_setup import AGG_VIEW, ORDERS_PER_ROOT, BenchSource
from pipeline import worker as worker_mod
from pipeline.views import build_views

logger = logging.getLogger(__name__)

#: Streamed UPDATEs set ``qty`` to ``MARK + k``; the seed data stays below it.
MARK = 100


def bench_streaming(
    src: BenchSource, pgs: PgSync, es: elasticsearch.Elasticsearch, args: Any
) -> dict[str, Any]:
    """Both tools live while ``--changes`` UPDATEs of order_lines commit."""
    cfg = src.configs["aggregate"]
    alias = readside_alias(cfg)
    logger.info("streaming: starting the Debezium connector and pgsync --daemon")
    src.start_connector(cfg)
    pgs.start_daemon()
    worker = worker_mod.Worker(
        cfg,
        build_views(cfg, only=[AGG_VIEW]),
        worker_mod.build_sinks(cfg, ["elasticsearch"]),
    )
    failure: list[BaseException] = []

    def run_worker() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=run_worker, name="readside-worker", daemon=True)
    thread.start()
    indices = {"readside": alias, "pgsync": pgs.index}
    try:
        # A first change that both must show: both consumers are live.
        warm: list[float] = []
        _update(src.dsn, [(1, MARK - 1)], warm)
        seen = _poll_visible(es, indices, MARK - 1, 1, args.run_timeout, failure, pgs)
        if not all(s and s[-1][1] >= 1 for s in seen.values()):
            raise RuntimeError(f"streaming warm-up: not shown by all: {seen}")
        roots = random.Random(5).sample(
            range(2, args.roots + 1), min(args.changes, args.roots - 1)
        )
        changes = [(r, MARK + k) for k, r in enumerate(roots)]
        logger.info("streaming: %d single-row updates of order_lines", len(changes))
        commits: list[float] = []
        writer = threading.Thread(
            target=_update, args=(src.dsn, changes, commits), daemon=True
        )
        writer.start()
        samples = _poll_visible(
            es, indices, MARK, len(changes), args.run_timeout, failure, pgs
        )
        writer.join(args.run_timeout)
    finally:
        worker.stop()
        thread.join(60)
        pgs.stop_daemon()
    if len(commits) < len(changes):
        raise RuntimeError(f"streaming writer: {len(commits)} of {len(changes)}")
    first, last = commits[0], commits[-1]
    out: dict[str, Any] = {
        "changes": len(changes),
        "writer_s": last - first,
        "writes_per_s": len(changes) / (last - first) if last > first else None,
    }
    for tool in indices:
        series = samples.get(tool, [])
        if not series or series[-1][1] < len(changes):
            out[tool] = {"complete": False, "visible": series[-1][1] if series else 0}
            continue
        done = next(t for t, n in series if n >= len(changes))
        lags = sorted(_lags(series, commits))
        out[tool] = {
            "complete": True,
            "all_visible_s": done - first,
            "changes_per_s": len(changes) / (done - first),
            "after_last_commit_s": done - last,
            "lag_p50_s": lags[len(lags) // 2],
            "lag_p95_s": lags[min(len(lags) - 1, int(len(lags) * 0.95))],
            "lag_max_s": lags[-1],
            "polls": len(series),
        }
    return out


def _update(dsn: str, changes: Sequence[tuple[int, int]], commits: list[float]) -> None:
    """One autocommitted UPDATE per change: the first order line of root
    ``r`` (order and line ids are equal) gets ``qty``; appends commit times."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for root, qty in changes:
            line = (root - 1) * ORDERS_PER_ROOT + 1
            conn.execute("UPDATE order_lines SET qty = %s WHERE id = %s", (qty, line))
            commits.append(time.perf_counter())


def _lags(series: list[tuple[float, int]], commits: list[float]) -> Iterator[float]:
    """Commit-to-visible time of each change, taking change k as visible at
    the first poll that counted k + 1 changes (visibility in commit order)."""
    pos = 0
    for k, committed in enumerate(commits):
        while series[pos][1] < k + 1:
            pos += 1
        yield max(0.0, series[pos][0] - committed)


def _poll_visible(
    es: elasticsearch.Elasticsearch,
    indices: dict[str, str],
    qty: int,
    want: int,
    timeout_s: float,
    failure: list[BaseException],
    pgs: PgSync,
) -> dict[str, list[tuple[float, int]]]:
    """Per index, ``(time, roots with a line of qty or more)`` polled until it
    shows ``want`` of them; each index is refreshed before its count, so the
    count is what a search would see then."""
    query = {"range": {"orders.lines.qty": {"gte": qty}}}
    series: dict[str, list[tuple[float, int]]] = {tool: [] for tool in indices}
    done: set[str] = set()
    deadline = time.perf_counter() + timeout_s
    while len(done) < len(indices) and time.perf_counter() < deadline:
        if failure:
            raise RuntimeError(f"readside worker failed: {failure[0]!r}")
        if pgs.daemon is not None and pgs.daemon.poll() is not None:
            raise RuntimeError(f"pgsync daemon exited: {pgs.daemon_log_tail()}")
        for tool, index in indices.items():
            if tool in done:
                continue
            es.options(ignore_status=404).indices.refresh(index=index)
            resp = es.options(ignore_status=404).count(index=index, query=query)
            n = int(dict(resp.body).get("count", 0))
            series[tool].append((time.perf_counter(), n))
            if n >= want:
                done.add(tool)
        time.sleep(0.05)
    return series
