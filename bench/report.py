"""The benchmark reports: the machine, versions, Markdown tables (``python -m
bench``'s own is :mod:`bench.worker_report`)."""

from __future__ import annotations

import logging
import os
import platform
from importlib import metadata
from typing import Any

from pipeline import logs

logger = logging.getLogger(__name__)

_PACKAGES = (
    "confluent-kafka",
    "redis",
    "hiredis",
    "elasticsearch",
    "pymongo",
    "psycopg",
)


def setup_logging() -> None:
    """INFO lines of a bench run on stderr; store clients' chatter hidden."""
    logs.setup(logging.INFO, (*logs.QUIET, "connectors"))


def _meminfo_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _servers(cfg: Any) -> dict[str, str]:
    """Versions the stores report about themselves (best effort)."""
    import confluent_kafka
    import elasticsearch
    import pymongo

    out = {"librdkafka": confluent_kafka.libversion()[0]}
    for s in cfg.sinks.values():
        try:
            if s.type == "redis":
                client = s.connect()
                out["redis-server"] = str(client.info("server")["redis_version"])
            elif s.type == "elasticsearch":
                es = elasticsearch.Elasticsearch(s.hosts)
                # the node's own info: the stack's integ-test distribution
                # has no root route (GET / answers 405) for es.info()
                nodes = es.nodes.info(node_id="_local", metric="_none")["nodes"]
                versions = {str(n["version"]) for n in nodes.values()}
                out["elasticsearch-server"] = ",".join(sorted(versions))
            elif s.type == "mongodb":
                mc: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                    s.uri.get_secret_value(), serverSelectionTimeoutMS=3000
                )
                info = mc.admin.command("buildInfo")
                out["mongodb-server"] = str(info.get("version"))
                if "ferretdbVersion" in info:
                    out["ferretdb"] = str(info["ferretdbVersion"])
        except Exception as exc:  # noqa: BLE001 - versions are informative only
            logger.warning("no version of sink type=%s error=%s", s.type, exc)
    return out


def machine(cfg: Any) -> dict[str, Any]:
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "-"
    return {
        "nproc": os.cpu_count(),
        "memory_mb": _meminfo_mb(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "servers": _servers(cfg),
    }


def ratio(row: dict[str, Any]) -> float | None:
    worker, base = row.get("events_per_s"), row.get("raw_docs_per_s")
    if not worker or not base:
        return None
    return float(worker) / float(base)


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _spent(row: dict[str, Any], *areas: str) -> str:
    spent = row.get("spent_s") or {}
    total = row.get("elapsed_s") or 0.0
    if not total:
        return "-"
    return " / ".join(f"{spent.get(a, 0.0) / total:.0%}" for a in areas)


def _snap_row(label: str, size: str, row: dict[str, Any], extra: str) -> str:
    if "error" in row:
        return f"| {label} | {size} | error: {row['error'][:160]} |"
    rate, base = row["rows_per_s"], row.get("raw_docs_per_s")
    ratio = f"{rate / base:.2f}" if base else "-"
    return (
        f"| {label} | {size} | {row['elapsed_s']:.1f} | {rate:,.0f}{extra} "
        f"| {_num(base)} | {ratio} | {row['peak_rss_mb']:.0f} |"
    )


def snapshot_markdown(results: dict[str, Any]) -> str:
    """The report of ``python -m bench snapshot``."""
    m, sz = results["machine"], results["sizes"]
    table, agg = results.get("table", {}), results.get("aggregate", {})
    init = table.get("initial_snapshot", {"rows": 0, "seconds": 0, "rows_per_s": 0})
    lines = [
        f"## readside snapshot benchmark{' (quick)' if sz['quick'] else ''}",
        "",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_mb']:,} MB RAM, "
        f"Python {m['python']}",
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in {**m["packages"], **m["servers"]}.items()),
        f"tables filled in {results['fill_s']:.1f}s; Debezium initial snapshot "
        f"(JSON with schemas, 3 partitions): {init['rows']:,} rows in "
        f"{init['seconds']:.1f}s = {init['rows_per_s']:,.0f} rows/s "
        "(connector registration to last record in the topics)",
        "",
        "### table view: `readside snapshot catalog --sink S` (compacted-topic replay)",
        "",
        "| sink | writers (processes) | rows | seconds | rows/s | raw docs/s "
        "| snapshot/raw | peak RSS MB (main; each replay process) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_writers = table.get("by_writers", {})
    for sink in ("redis", "elasticsearch", "mongodb"):
        flag = " (small table, inserts)" if sink == "mongodb" else ""
        runs = by_writers.get(sink) or ({"-": table[sink]} if sink in table else {})
        for writers, row in runs.items():
            line = _snap_row(sink + flag, f"{row.get('docs', 0):,}", row, "")
            if row.get("child_peak_rss_mb") and "error" not in row:
                line = f"{line[:-2]}; {row['child_peak_rss_mb']:.0f} |"
            lines.append(line.replace(" | ", f" | {writers} | ", 1))
    # the time split is timed in the main process: runs with one writer
    single = {
        s: by_writers.get(s, {}).get("1", table[s])
        for s in ("redis", "elasticsearch", "mongodb")
        if s in table
    }
    lines += [
        "",
        "time split, one writer, of the run's wall time (the reading thread: "
        "Kafka consume / decode+build; beside it the main thread: sink write "
        "/ progress): "
        + "; ".join(
            f"{s} {_spent(row, 'read', 'decode', 'write', 'progress')}"
            for s, row in single.items()
            if row and "error" not in row
        ),
        "",
        f"### aggregate view: `readside snapshot customers --sink S` (chunks of "
        f"{sz['chunk_size']:,} roots; ~10 child rows per root)",
        "",
        "| sink | roots | seconds | roots/s (child rows/s) | raw docs/s "
        "| snapshot/raw | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sink in ("redis", "elasticsearch", "mongodb"):
        if sink in agg:
            row = agg[sink]
            flag = f" (`{row['where']}`)" if row.get("where") else ""
            extra = f" ({row.get('children_per_s', 0):,.0f})"
            lines.append(_snap_row(sink + flag, f"{row.get('rows', 0):,}", row, extra))
    lines += [
        "",
        "time split, of the run's wall time (the reading thread: PostgreSQL "
        "reads / documents built in Python; the writers' sink writes, summed; "
        "beside them the main thread: waiting for a chunk / for the writers / "
        "progress / rest): "
        + "; ".join(
            f"{s} {_spent(agg[s], 'read', 'build')}; {_spent(agg[s], 'write')}; "
            f"{_spent(agg[s], 'wait', 'writers', 'progress', 'other')}"
            for s in ("redis", "elasticsearch", "mongodb")
            if s in agg and "error" not in agg[s]
        ),
        "",
        f"### coalescing while streaming ({sz['changes']:,} single-row updates "
        "of orders and order_lines"
        + (f" of the first {sz['hot_roots']:,} roots" if sz.get("hot_roots") else "")
        + ", worker into Redis)",
        "",
        "| run | batch_size | changes | batches | changes/batch | re-reads per 1k "
        "| resolves per 1k | roots re-read per 1k | changes/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.get("streaming", ()):
        lines.append(
            f"| {r['mode']} | {r['batch_size']:,} | {r['changes']:,} "
            f"| {r['batches']:,} "
            f"| {r['events_per_batch']:.0f} | {r['rereads_per_1k']:.1f} "
            f"| {r['resolves_per_1k']:.1f} | {r['roots_per_1k']:.0f} "
            f"| {r['changes_per_s']:,.0f} |"
        )
    if results.get("rebuild"):
        lines += [
            "",
            "### rebuild: `readside snapshot customers --sink S`, then "
            "`--rebuild` of it in the same process",
            "",
            "| sink | roots | load roots/s | rebuild roots/s | rebuild / load "
            "| rebuild s | generation |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for sink, r in results["rebuild"].items():
            if "rebuild_s" not in r:
                lines.append(f"| {sink} | failed: {r.get('error', '?')} |")
                continue
            ratio = r["rebuild_rows_per_s"] / max(r["rows_per_s"], 1e-9)
            lines.append(
                f"| {sink} | {r['rebuild_rows']:,} | {r['rows_per_s']:,.0f} "
                f"| {r['rebuild_rows_per_s']:,.0f} | {ratio:.2f} "
                f"| {r['rebuild_s']:.1f} | {r['rebuild_generation']} |"
            )
    return "\n".join(lines)
