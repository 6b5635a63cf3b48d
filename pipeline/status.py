"""``readside status``: how far behind each view is, in every sink.

Four figures per view and sink: consumer lag in messages (end offsets minus
committed offsets of the view's topic), time lag (now minus the source commit
time of the last applied event, or of the newest heartbeat when the view has
nothing left to read), the replication slot's lag in bytes, and the count of
dead letters. Checkpoints come from the checkpoint topic, so they survive
restarts. It warns of every partition a view's groups left unread past its
topic's delete window (:mod:`pipeline.deletewindow`), and of every view a
sink does not hold whole, as its workers recorded (:mod:`pipeline.loaded`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors import debezium, rowsecurity
from pipeline import checkpoints, definitions, deletewindow, groups, kafkaclient
from pipeline.aggregate import identity, prepare_views
from pipeline.config import Config
from pipeline.errors import ReadsideError
from pipeline.events import format_lsn
from pipeline.kafkaclient import topic_configs
from pipeline.snapshot.state import SnapshotLog
from pipeline.textout import columns
from pipeline.views import build_views

logger = logging.getLogger(__name__)


@dataclass
class ViewSinkStatus:
    view: str
    sink: str
    consumer_lag: int
    applied_lsn: int | None
    last_commit_ts_ms: int | None
    time_lag_ms: int | None
    applied_ts_ms: int | None
    partitions: int
    #: since when the sink does not hold the view whole (pipeline.loaded),
    #: why, and the command that loads it
    unloaded_since_ms: int | None = None
    unloaded_why: str | None = None
    unloaded_load: str | None = None


def _offsets(
    consumer: Consumer, topic: str, timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) offsets of every partition of ``topic``."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        return {}
    return {
        (topic, p): consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=timeout
        )
        for p in md.partitions
    }


def dead_letter_count(consumer: Consumer, topic: str, timeout: float) -> int:
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        return 0
    total = 0
    for p in md.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=timeout
        )
        total += high - low
    return total


def collect(cfg: Config, timeout: float = 10.0) -> dict[str, Any]:
    cps, mark, unloaded, recorded = checkpoints.read_recorded(
        cfg.kafka, cfg.kafka.checkpoint_topic, timeout
    )
    consumer = kafkaclient.consumer(
        cfg.kafka,
        {"group.id": f"{cfg.kafka.group_id}-status", "enable.auto.commit": False},
    )
    now = int(time.time() * 1000)
    rows: list[ViewSinkStatus] = []
    try:
        bounds: dict[tuple[str, int], tuple[int, int]] = {}
        for view in cfg.effective_views().values():
            for table in view.tables():
                if cfg.source.topic(table) not in {t for t, _p in bounds}:
                    bounds.update(_offsets(consumer, cfg.source.topic(table), timeout))
        # Consumer lag of a view in a sink: behind the groups that apply it.
        reached = groups.AppliedOffsets(cfg, timeout).by_pair(bounds)
        for view_name, view in cfg.effective_views().items():
            topics = {cfg.source.topic(t) for t in view.tables()}
            own = {k: b for k, b in bounds.items() if k[0] in topics}
            parts = len(own)
            for sink in view.sinks:
                done = reached[(view_name, sink)]
                lag = sum(
                    max(0, high - done.get(k, low)) for k, (low, high) in own.items()
                )
                mine = [
                    c for c in cps.values() if c.view == view_name and c.sink == sink
                ]
                lsn = max((c.lsn for c in mine if c.lsn), default=None)
                ts = max((c.commit_ts_ms for c in mine if c.commit_ts_ms), default=None)
                applied = max((c.applied_ts_ms for c in mine), default=None)
                newest = ts
                if lag == 0 and mark is not None and mark.ts_ms:
                    newest = max(ts or 0, mark.ts_ms)
                rows.append(
                    ViewSinkStatus(
                        view_name,
                        sink,
                        lag,
                        lsn,
                        ts,
                        None if newest is None else max(0, now - newest),
                        applied,
                        parts,
                        *unloaded.get((view_name, sink), (None, None, None)),
                    )
                )
        settings = _topic_settings(cfg, timeout)
        behind = _behind_the_window(consumer, reached, settings, timeout)
        dlq = dead_letter_count(consumer, cfg.kafka.dlq_topic, timeout)
    finally:
        consumer.close()
    source = capture(cfg)
    return {
        "views": [
            {**asdict(r), "applied_lsn_text": _lsn_text(r.applied_lsn)} for r in rows
        ],
        "snapshots": snapshots(cfg),
        "slot_lag_bytes": source.pop("slot_lag_bytes", None),
        "slot": source.pop("slot", None),
        "capture_warnings": source.pop("capture_warnings", []) + source_warnings(cfg),
        "connector": source,
        "dead_letters": dlq,
        "behind_delete_window": behind,
        "topic_warnings": deletewindow.dropping(settings, cfg.view_topics()),
        "definition_warnings": definitions.problems(
            cfg,
            recorded,
            definitions.source_columns(cfg, sorted(cfg.effective_views())),
        ),
        "source_mark": None if mark is None else asdict(mark),
        "generated_ts_ms": now,
    }


def _topic_settings(cfg: Config, timeout: float) -> dict[str, dict[str, str]]:
    """The effective settings of each view topic that exists, read once for
    the delete window and the cleanup policies ({} if they cannot be read:
    a login that may not describe configs)."""
    admin = kafkaclient.admin(cfg.kafka)
    try:
        there = admin.list_topics(timeout=timeout).topics
        return topic_configs(admin, [t for t in cfg.view_topics() if t in there])
    except (KafkaException, TimeoutError) as exc:
        logger.warning("topic settings not read error=%s", exc)
        return {}


def _behind_the_window(
    consumer: Consumer,
    reached: Mapping[tuple[str, str], Mapping[tuple[str, int], int]],
    settings: Mapping[str, Mapping[str, str]],
    timeout: float,
) -> list[dict[str, Any]]:
    """Per view and sink, the partitions its groups left unread past their
    topic's delete window (:mod:`pipeline.deletewindow`; each partition's
    marks read once)."""
    if not settings:
        return []  # not read: said by _topic_settings
    parts = {part for offsets in reached.values() for part in offsets}
    out = []
    windows = deletewindow.windows_of(settings)
    try:
        marks = deletewindow.read_marks(consumer, parts, windows, timeout_s=timeout)
    except KafkaException as exc:  # e.g. a login that may not describe configs
        logger.warning("delete window not checked error=%s", exc)
        return []
    for (view, sink), offsets in sorted(reached.items()):
        for part in deletewindow.behind(offsets, marks, windows):
            says = part.says([view])
            out.append({"view": view, "sink": sink, **asdict(part), "says": says})
    return out


def source_warnings(cfg: Config) -> list[str]:
    """What the source's catalog says against the capture and the reads: a
    policy hiding rows from the connector's role or the reader
    (:mod:`connectors.rowsecurity`), a table that lost the REPLICA IDENTITY
    FULL an aggregate view needs (:mod:`pipeline.aggregate.identity`); none
    (and a warning) when the source cannot be read."""
    dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    tables = sorted({t for v in cfg.effective_views().values() for t in v.tables()})
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            out = rowsecurity.capture_problems(conn, cfg)
            reader = rowsecurity.reader_problem(conn, tables)
            if reader is not None:
                return [*out, reader]
            views = build_views(cfg)
            prepare_views(views, dsn, strict=False)
            return out + identity.problems(conn, identity.needs_full(views.values()))
    except (ReadsideError, psycopg.Error) as exc:
        logger.warning("the source's catalog not read error=%s", exc)
        return []


def capture(cfg: Config) -> dict[str, Any]:
    """The connector's state and its tasks' (``state`` ``UNREACHABLE`` when
    Connect does not answer), and its replication slot's
    (:func:`connectors.debezium.slot_report`): a failed task or an idle slot
    leaves every view stale with nothing else to show for it."""
    try:
        return debezium.status(cfg)
    except Exception as exc:  # noqa: BLE001 (status must show what it can)
        try:
            slot = debezium.slot_report(cfg)
        except Exception:  # noqa: BLE001
            slot = {}
        return {
            "connector": cfg.connect.connector,
            "state": "UNREACHABLE",
            "error": str(exc)[:200],
            "tasks": [],
            **slot,
        }


def _lsn_text(lsn: int | None) -> str | None:
    return None if lsn is None else format_lsn(lsn)


def snapshots(cfg: Config) -> list[dict[str, Any]]:
    """Snapshot runs recorded for this pipeline, newest first."""
    try:
        states = SnapshotLog(cfg).read(timeout_s=5.0).values()
    except Exception:  # noqa: BLE001 (status must show what it can)
        return []
    rows = []
    for st in sorted(states, key=lambda s: s.updated_ms, reverse=True):
        rows.append({**asdict(st), "rows_per_s": round(st.rate(), 1)})
    return rows


def render(st: dict[str, Any]) -> str:
    """The text of ``readside status``: plain columns, LSNs as PostgreSQL
    prints them (``16/B374D848``)."""
    rows = [
        [
            r["view"],
            r["sink"],
            r["consumer_lag"],
            "-" if r["time_lag_ms"] is None else f"{r['time_lag_ms'] / 1000:.1f}s",
            "-" if r["applied_lsn"] is None else format_lsn(r["applied_lsn"]),
        ]
        for r in st["views"]
    ]
    head = ["view", "sink", "lag(msg)", "time lag", "applied lsn"]
    lines = [columns(head, rows, right=(2, 3))]
    lines.append("")
    lines.extend(_capture_lines(st))
    lines.append(f"dead letters: {st['dead_letters']}")
    for part in st.get("behind_delete_window", []):
        lines.append(f"warning: {part['view']} in {part['sink']}: {part['says']}")
    lines.extend(f"warning: {w}" for w in st.get("topic_warnings", []))
    for r in st["views"]:
        if r.get("unloaded_since_ms") is not None:
            since = datetime.fromtimestamp(r["unloaded_since_ms"] / 1000, UTC)
            why = r.get("unloaded_why") or (
                "the store lost the view, or the sink was added to it later"
            )
            load = r.get("unloaded_load") or (
                f"readside snapshot {r['view']} --sink {r['sink']}"
            )
            lines.append(
                f"warning: {r['view']} in {r['sink']}: not whole since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC (its load mark is missing: "
                f"{why}); load it: {load}"
            )
    lines.extend(f"warning: {w}" for w in st.get("definition_warnings", []))
    for snap in st.get("snapshots", []):
        if snap["method"] == "focus":
            lines.append(
                f"focus {snap['view']}: {snap['state']} where {snap['where']} "
                f"({snap['rows']:,} documents written)"
            )
            continue
        if snap["method"] == "rebuild":
            lines.append(
                f"rebuild {snap['view']} -> generation {snap['generation']} "
                f"({','.join(snap['sinks'])}): {snap['state']}, step {snap['phase']}, "
                f"{snap['rows']:,} rows in this step"
            )
            continue
        total = "?" if snap["total"] is None else f"{snap['total']:,}"
        lines.append(
            f"snapshot {snap['view']} ({snap['method']}, {','.join(snap['sinks'])}): "
            f"{snap['state']} {snap['rows']:,}/{total} rows, "
            f"{snap['rows_per_s']:,.0f} rows/s"
        )
    return "\n".join(lines)


def _capture_lines(st: dict[str, Any]) -> list[str]:
    """The connector, its slot, and what in them needs an operator."""
    lines = []
    conn = st.get("connector")
    if conn:
        tasks = ", ".join(f"task {t['id']} {t['state']}" for t in conn["tasks"])
        lines.append(
            f"connector {conn['connector']}: {conn['state']} ({tasks or 'no task'})"
        )
        if conn.get("error"):
            lines.append(f"warning: Kafka Connect did not answer: {conn['error']}")
        for t in conn["tasks"]:
            if t["state"] == "FAILED":
                lines.append(
                    f"warning: connector task {t['id']} FAILED, nothing new reaches "
                    f"the topics: {t['trace'].splitlines()[0] if t['trace'] else ''}"
                )
                if t.get("on_registry"):
                    lines.append(
                        "  the schema registry failed it (a new schema not "
                        "registered); the workers restart it once the registry "
                        "answers"
                    )
                if t.get("on_source"):
                    lines.append(
                        "  the source database refused or cut a connection of "
                        "it; the workers restart it once the source answers"
                    )
    lines.append(f"replication slot lag: {st['slot_lag_bytes']} bytes")
    slot = st.get("slot")
    if slot:
        lines.append(
            f"replication slot {slot['name']}: "
            f"{'active' if slot['active'] else 'inactive'}, "
            f"{slot['retained_bytes']} bytes of WAL retained, "
            f"wal_status {slot['wal_status']}"
        )
    lines.extend(f"warning: {w}" for w in st.get("capture_warnings", []))
    return lines
