"""Latency figures, threaded timing and the report of ``python -m bench api``."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds), in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    """Requests, requests/s, p50, p99 and mean (ms) of one timed run."""
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def timed_calls(
    call: Callable[[int], None], requests: int, threads: int
) -> dict[str, float]:
    """Run ``call(i)`` for i < requests on ``threads`` threads; time each."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        mine = []
        for i in range(worker, requests, threads):
            start = time.perf_counter()
            call(i)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    return summary(latencies, time.perf_counter() - start)


#: (result, label, the raw Redis row it is compared with)
ROWS = (
    ("http", "HTTP API, lean asyncio client", "redis"),
    ("redis", "raw Redis GET, lean asyncio client", "redis"),
    ("ceiling", "the ASGI server alone (a constant answer), lean client", "redis"),
    (
        "ceiling_wire",
        "the server writing get by id alone (a constant answer), lean client",
        "redis",
    ),
    ("http_library", "HTTP API, httpx on threads", "redis_library"),
    ("redis_library", "raw Redis GET, redis-py on threads", "redis_library"),
    ("client", "ReadClient on threads (in the bench's process)", "redis_library"),
)


def markdown(results: dict[str, Any]) -> str:
    """The report of ``python -m bench api``."""
    reads, lat = results["reads"], results["commit_to_read"]
    lines = [
        f"concurrency {results['concurrency']} (connections or threads), "
        f"{results['requests']} requests per row, `readside serve` from "
        f"{results['server_code']} ({results.get('server_workers', 1)} process(es)); "
        "every row but ReadClient loads from a process of its own",
        "",
        "| get by id | req/s | p50 ms | p99 ms | req/s vs raw Redis | p50 vs raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label, base in ROWS:
        if name not in reads:  # a run from before the row
            continue
        r, raw = reads[name], reads[base]
        rel = r["per_s"] / raw["per_s"]
        slower = r["p50_ms"] / raw["p50_ms"]
        lines.append(
            f"| {label} | {r['per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {rel:.2f} | {slower:.1f}x |"
        )
    if "ceiling" in reads:
        ceiling = reads["ceiling"]["per_s"]
        lines += [
            "",
            f"The ASGI server alone reaches {ceiling / reads['redis']['per_s']:.2f} "
            "of raw Redis (what any handler behind it can reach here); the HTTP "
            f"API reaches {reads['http']['per_s'] / ceiling:.2f} of that.",
        ]
    if "ceiling_wire" in reads:
        wired = reads["ceiling_wire"]["per_s"]
        lines.append(
            f"Written as get by id is, a constant answer reaches "
            f"{wired / reads['redis']['per_s']:.2f} of raw Redis; the HTTP API "
            f"reaches {reads['http']['per_s'] / wired:.2f} of that."
        )
    lines += [
        "",
        "commit to readable through the API under "
        f"{lat['load_writes_per_s']:.0f} background transactions/s "
        f"(asked {results['load_rate']:.0f}/s; at most "
        f"{lat.get('load_behind_ms', 0.0):.0f} ms behind schedule), "
        f"{results['probes']} probes per method on {results['threads']} threads:",
        "",
        "| method | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|",
    ]
    for name in ("min_lsn", "poll"):
        r = lat[name]
        lines.append(
            f"| {name} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_ms']:.0f} |"
        )
    return "\n".join(lines)
