"""The Markdown report of ``python -m bench pgsync``: rates, documents, streaming."""

from __future__ import annotations

import json
from typing import Any

from bench.snapshot_setup import ORDERS_PER_ROOT

_CLIENTS = {
    "elasticsearch": "elasticsearch-py (its default)",
    "opensearch": "opensearch-py (`OPENSEARCH=true`)",
}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    rs, pg = results["readside"], results["pgsync"]
    versions = {**m["packages"], **m["servers"]}
    lines = [
        f"## readside vs pgsync: the aggregate view `customers` into Elasticsearch "
        f"({results['roots']:,} roots, ~{2 * ORDERS_PER_ROOT} child rows per root)",
        "",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_mb']:,} MB RAM, "
        f"Python {m['python']}; servers: "
        + ", ".join(f"{k} {v}" for k, v in results["servers"].items()),
        "readside: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "pgsync (own virtualenv): "
        + ", ".join(f"{k} {v}" for k, v in results["pgsync_packages"].items()),
        f"pgsync's search client: {_CLIENTS[results['pgsync_client']]}"
        + (f". Why: {why}" if (why := results["pgsync_client_why"]) else ""),
        f"tables filled in {results['fill_s']:.1f}s",
        "",
        "| tool | run | roots | seconds | roots/s | process wall s | roots/s (wall) "
        "| docs in index | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| readside | `readside snapshot customers --sink elasticsearch` (chunks "
        f"of {results['chunk_size']:,}, {results.get('writers', 1)} writers) "
        f"| {rs['rows']:,} | {rs['elapsed_s']:.1f} "
        f"| {rs['roots_per_s']:,.0f} | {rs['wall_s']:.1f} "
        f"| {rs['rows'] / rs['wall_s']:,.0f} "
        f"| {rs['docs_held'].get('elasticsearch', 0):,} | {rs['peak_rss_mb']:.0f} |",
        f"| pgsync | `pgsync --config schema.json` (initial sync, after "
        f"`bootstrap`: {pg['bootstrap_s']:.1f}s) | {pg['roots']:,} "
        f"| {pg['own_s'] or pg['wall_s']:.1f} | {pg['roots_per_s']:,.0f} "
        f"| {pg['wall_s']:.1f} | {pg['roots_per_s_wall']:,.0f} "
        f"| {pg['docs_held']:,} | {pg['peak_rss_mb']:.0f} |",
        "",
        f"readside/pgsync roots/s: **{results['ratio']:.2f}** "
        f"({results['ratio_wall']:.2f} by process wall clock). "
        "Seconds: readside's `Loader.run()`; pgsync's own timer (connect, "
        "validate, create the index, sync). pgsync's index: "
        f"{pg['missing_roots']} roots missing, {pg['extra_docs']} extra documents.",
    ]
    spent = rs.get("spent_s") or {}
    if "wait" in spent:
        lines += [
            "",
            "readside's seconds: in the reading thread, PostgreSQL reads "
            f"{spent.get('read', 0):.1f} and documents built "
            f"{spent.get('build', 0):.1f}; the writers' bulk writes "
            f"{spent.get('write', 0):.1f} (summed, {results.get('writers', 1)} at "
            f"once); the main thread waited for a chunk {spent['wait']:.1f}, for "
            f"the writers {spent.get('writers', 0):.1f} and recorded progress "
            f"{spent.get('progress', 0):.1f}.",
        ]
    docs = results.get("documents")
    if docs:
        lines += [
            "",
            f"### documents ({docs['sample']:,} sample roots read back from both "
            "indices)",
            "",
            f"found: readside {docs['readside_found']:,}, pgsync "
            f"{docs['pgsync_found']:,}; identical: {docs['identical']:,}; equal in "
            "every root: " + ", ".join(f"`{f}`" for f in docs["equal_fields"]),
        ]
        if docs["differences"]:
            lines += [
                "",
                "| field | difference | roots | readside | pgsync |",
                "|---|---|---:|---|---|",
            ]
            lines += [
                f"| `{d['field']}` | {d['kind']} | {d['roots']:,} "
                f"| `{json.dumps(d['readside'])}` | `{json.dumps(d['pgsync'])}` |"
                for d in docs["differences"]
            ]
    st = results.get("streaming")
    if st:
        lines += [
            "",
            f"### streaming: {st['changes']:,} single-row UPDATEs of order_lines "
            "(one per root), both tools live",
            "",
            f"writer: {st['writer_s']:.1f}s"
            + (f" ({st['writes_per_s']:,.0f} commits/s)" if st["writes_per_s"] else ""),
            "",
            "| tool | all visible after s | changes/s | after the last commit s "
            "| commit to visible p50 / p95 / max s |",
            "|---|---:|---:|---:|---:|",
        ]
        for tool, label in (
            ("readside", "readside (Debezium, Kafka, worker)"),
            ("pgsync", "pgsync --daemon (triggers, Redis queue)"),
        ):
            r = st[tool]
            if not r["complete"]:
                lines.append(
                    f"| {label} | not within the time budget ({r['visible']:,} "
                    "visible) | - | - | - |"
                )
                continue
            lines.append(
                f"| {label} | {r['all_visible_s']:.1f} | {r['changes_per_s']:,.0f} "
                f"| {r['after_last_commit_s']:.2f} | {r['lag_p50_s']:.2f} / "
                f"{r['lag_p95_s']:.2f} / {r['lag_max_s']:.2f} |"
            )
        lines += [
            "",
            "Commit to visible: a change counts as visible at the first poll "
            "(refresh, then count; every ~0.1 s) that counts as many changes as "
            "its rank in commit order.",
        ]
    return "\n".join(lines)
