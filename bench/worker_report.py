"""The report of ``python -m bench``: each measurement's rows of every format
side by side (decoding, worker runs, CPU per stage, the machine's CPU by
process), then the profiles."""

from __future__ import annotations

from typing import Any

from bench.report import _num, ratio
from bench.stages import STAGES

SCENARIOS = ("redis", "elasticsearch", "mongodb", "all")
_EXTRA = ("other (main thread)", "other threads", "total")


def _label(name: str) -> str:
    return "worker, all three sinks" if name == "all" else f"worker, {name}"


def _head(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    sizes = ", ".join(
        f"{name} {f['decode']['avg_value_bytes']:,.0f} B"
        for name, f in results["formats"].items()
    )
    return [
        f"## readside benchmark ({results['events']:,} events)",
        "",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_mb']:,} MB RAM, "
        f"Python {m['python']}, {m['platform']}",
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in {**m["packages"], **m["servers"]}.items()),
        f"records: {results['avg_row_bytes']:,.0f} B per row (`after` as compact "
        f"JSON); per Kafka value: {sizes} (json: schema + payload; avro: 5-byte "
        "header + datum, the schema in the registry)",
    ]


def _decoding(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### decoding (in memory, one thread)",
        "",
        "| measurement | format | events | seconds | events/s | MB/s | B parsed "
        "| converter / this |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    fmts = results["formats"]
    for name, f in fmts.items():
        lines.append(_rate_row("readside converter", name, f["decode"], "-"))
    for name, f in fmts.items():
        for row in f["bare"]:
            rel = f["decode"]["events_per_s"] / row["events_per_s"]
            lines.append(
                _rate_row(f"bare parse: {row['how']}", name, row, f"{rel:.2f}")
            )
    return lines


def _rate_row(label: str, name: str, row: dict[str, Any], rel: str) -> str:
    return (
        f"| {label} | {name} | {row['events']:,} | {row['elapsed_s']:.2f} "
        f"| {row['events_per_s']:,.0f} | {row['mb_per_s']:,.0f} "
        f"| {row['avg_value_bytes']:,.0f} | {rel} |"
    )


def _workers(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### worker runs",
        "",
        "| measurement | format | events | seconds | worker events/s | raw docs/s "
        "| worker/raw | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        for name, f in results["formats"].items():
            row = f["rows"].get(scenario)
            if row is None:
                continue
            label = _label(scenario)
            if "error" in row:
                lines.append(
                    f"| {label} | {name} | {row['scenario_events']:,} | - "
                    f"| error: {row['error'][:120]} "
                    f"| {_num(row.get('raw_docs_per_s'))} | - | - |"
                )
                continue
            partial = "" if row.get("complete", True) else " (partial: time budget)"
            lines.append(
                f"| {label}{partial} | {name} | {row['events']:,} "
                f"| {row['elapsed_s']:.2f} | {row['events_per_s']:,.0f} "
                f"| {_num(row.get('raw_docs_per_s'))} "
                f"| {_num(ratio(row), '{:.2f}')} | {row['peak_rss_mb']:.0f} |"
            )
    return lines


def _stages(results: dict[str, Any]) -> list[str]:
    cols = [*STAGES, *_EXTRA]
    lines = [
        "",
        "### CPU per event by stage, µs (thread CPU time over each worker run; "
        "`write` on the worker's helper thread, `other threads`: librdkafka's "
        "and the store clients')",
        "",
        "| run | format | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for scenario in SCENARIOS:
        for name, f in results["formats"].items():
            cpu = (f["rows"].get(scenario) or {}).get("cpu_us_per_event")
            if not cpu:
                continue
            cells = " | ".join(_num(cpu.get(c), "{:.1f}") for c in cols)
            lines.append(f"| {_label(scenario)} | {name} | {cells} |")
    return lines


#: The machine table's process columns: the stack's services that a run
#: drives, the rest summed in ``other services``.
_PROCS = ("kafka", "redis", "elasticsearch", "ferretdb")


def _machine_row(label: str, name: str, use: dict[str, Any]) -> str:
    cpu = dict(use["cpu_us_per_event"])
    if "ferretdb_backend" in cpu:  # FerretDB's PostgreSQL is part of it
        cpu["ferretdb"] = cpu.get("ferretdb", 0.0) + cpu.pop("ferretdb_backend")
    own = cpu.pop("self", 0.0)
    rest = cpu.pop("other", 0.0)
    cells = [_num(own, "{:.1f}")] + [_num(cpu.pop(p, None), "{:.1f}") for p in _PROCS]
    cells += [f"{sum(cpu.values()):.1f}", f"{rest:.1f}"]
    return (
        f"| {label} | {name} | "
        + " | ".join(cells)
        + f" | {use['busy_cores']:.2f} of {use['cores']} |"
    )


def _machine(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### the machine's CPU per event, µs, by process (`run`: the worker's "
        "process, or the bench's for a raw bulk write; each service with its "
        "child processes; `rest`: every other process's busy time), and busy "
        "cores over the run",
        "",
        "| run | format | run | "
        + " | ".join(_PROCS)
        + " | other services | rest | busy cores |",
        "|---|---|" + "---:|" * (len(_PROCS) + 4),
    ]
    for scenario in SCENARIOS:
        for name, f in results["formats"].items():
            row = f["rows"].get(scenario) or {}
            if "machine" in row:
                lines.append(_machine_row(_label(scenario), name, row["machine"]))
            if "raw_machine" in row:
                lines.append(_machine_row(f"raw, {scenario}", name, row["raw_machine"]))
    return lines if len(lines) > 6 else []


def _profiles(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for fmt, f in results["formats"].items():
        for name, row in f["rows"].items():
            prof = row.get("profile_run") if isinstance(row, dict) else None
            if not prof or "profile" not in prof:
                continue
            lines += [
                "",
                f"### profile: {_label(name)}, {fmt} ({prof['events']:,} events, "
                f"{prof['events_per_s']:,.0f} events/s under cProfile)",
                "",
                "share of own time by area: "
                + ", ".join(
                    f"{k} {v:.0%}"
                    for k, v in list(prof["profile"]["by_area"].items())[:8]
                ),
                "",
                "| tottime s | cumtime s | calls | function |",
                "|---:|---:|---:|---|",
            ]
            lines += [
                f"| {t['tottime_s']} | {t['cumtime_s']} | {t['calls']:,} "
                f"| `{t['function']}` |"
                for t in prof["profile"]["top_tottime"][:12]
            ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The whole report of one run (``bench/results/latest.json``'s content)."""
    return "\n".join(
        _head(results)
        + _decoding(results)
        + _workers(results)
        + _stages(results)
        + _machine(results)
        + _profiles(results)
    )
