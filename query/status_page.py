"""The operators' status page: ``/status`` (HTML) and ``/v1/status`` (JSON).

A :class:`StatusMonitor` thread samples every ``api.status_interval_s``:
connector state and slot lag (:func:`connectors.debezium.status`), per view
and sink the consumer lag, time lag, safe watermark and throughput (from the
watermark tracker's offsets and the checkpoint topic), and the dead-letter
count; every few samples it also probes each service. Lag history stays in
a ring buffer in this process (``api.status_history_s``). The page is one
self-contained HTML document (inline CSS, JS and SVG; no CDN): it renders the
figures embedded at load, then fetches ``/v1/status`` every 2 s.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from connectors import debezium
from pipeline import definitions, kafkaclient
from pipeline.status import dead_letter_count, snapshots
from query.failures import FailureRun
from query.lsn import format_lsn
from query.service import Service, presented_key, probe_stores

logger = logging.getLogger(__name__)

router = APIRouter()
PROBE_EVERY = 5  # samples between two service probes
_PAGE = Path(__file__).with_name("status_page.html")


class StatusMonitor:
    """Samples the pipeline's figures on a thread; keeps the lag history."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.interval_s = svc.api.status_interval_s
        keep = max(2, int(svc.api.status_history_s / self.interval_s))
        self.history: dict[tuple[str, str], deque[list[int | None]]] = {
            (v, s): deque(maxlen=keep)
            for v, c in svc.config.effective_views().items()
            for s in c.sinks
        }
        #: Running snapshots (from the snapshot topic), in their own section.
        self.snapshots: list[dict[str, Any]] = []
        self.services: dict[str, str] = {}
        self.connector: dict[str, Any] = {}
        #: the source's columns of each view (pipeline.definitions)
        self.columns: dict[str, definitions.Definition] = {}
        self.dead_letters: int | None = None
        self._rates: dict[str, float] = {}
        self._last_offsets: tuple[float, dict[str, int]] | None = None
        self._latest: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._turns = 0
        self._failures = FailureRun(
            logger, "status sample", "the page shows the last good figures"
        )

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="readside-status", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        if self._consumer is not None:
            self._consumer.close()

    def latest(self) -> dict[str, Any]:
        """The newest figures (what ``/v1/status`` returns)."""
        with self._lock:
            return dict(self._latest) if self._latest else self._figures()

    # -- sampling --------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._failures.attempt(self.sample)  # else the last good figures stay
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """One round of figures (called by the thread; tests may call it)."""
        cfg = self.svc.config
        if self._turns % PROBE_EVERY == 0:
            self.services = self._probe()
            self.snapshots = self._snapshots()
            views = sorted(cfg.effective_views())
            self.columns = definitions.source_columns(cfg, views) or self.columns
        self._turns += 1
        try:
            self.connector = debezium.status(cfg)
        except Exception as exc:  # noqa: BLE001 (shown on the page)
            self.connector = {"state": "UNREACHABLE", "error": str(exc)[:200]}
        if self._consumer is None:
            self._consumer = kafkaclient.consumer(
                cfg.kafka,
                {
                    "group.id": f"{cfg.kafka.group_id}-status",
                    "enable.auto.commit": False,
                },
            )
        self.dead_letters = dead_letter_count(self._consumer, cfg.kafka.dlq_topic, 5)
        self.svc.tracker.refresh(0.5)
        self._rate()
        figures = self._figures()
        with self._lock:
            for row in figures["views"]:
                key = (row["view"], row["sink"])
                self.history[key].append(
                    [
                        figures["generated_ts_ms"],
                        row["time_lag_ms"],
                        row["consumer_lag"],
                    ]
                )
                row["history"] = list(self.history[key])
            self._latest = figures

    def _snapshots(self) -> list[dict[str, Any]]:
        """Snapshot runs still going (``readside snapshot``), with progress."""
        out = []
        for snap in snapshots(self.svc.config):
            if snap["state"] not in ("running", "signalled"):
                continue
            total = "?" if snap["total"] is None else f"{snap['total']:,}"
            method = snap["method"]
            if method == "rebuild":
                method = f"rebuild to generation {snap['generation']}: {snap['phase']}"
            out.append(
                {
                    "view": snap["view"],
                    "progress": f"{snap['rows']:,}/{total} ({method})",
                    "rows_per_s": snap["rows_per_s"],
                }
            )
        return out

    def _rate(self) -> None:
        tracker = self.svc.tracker
        now = time.monotonic()
        best: dict[tuple[str, int], int] = {}  # the furthest view per partition
        for (_view, topic, part), offset in tracker.committed.items():
            best[(topic, part)] = max(best.get((topic, part), 0), offset)
        sums: dict[str, int] = {}
        for (topic, _p), offset in best.items():
            sums[topic] = sums.get(topic, 0) + offset
        if self._last_offsets is not None:
            then, before = self._last_offsets
            dt = max(1e-3, now - then)
            self._rates = {
                t: max(0.0, (n - before.get(t, n)) / dt) for t, n in sums.items()
            }
        self._last_offsets = (now, sums)

    def _figures(self) -> dict[str, Any]:
        svc = self.svc
        tracker, fresh = svc.tracker, svc.client.freshness
        now = int(time.time() * 1000)
        mark = fresh.source_mark()
        rows = []
        changed = {
            pair: definitions.problem(svc.config, *pair, settings)
            for pair, settings in definitions.changes(
                svc.config, fresh.definitions(), self.columns
            ).items()
        }
        for view, cfg in svc.config.effective_views().items():
            topics = tracker.topics[view]
            lag = sum(
                max(0, end - tracker.committed.get((view, *part), 0))
                for part, end in tracker.ends.items()
                if part[0] in topics
            )
            wm = tracker.watermark(view)
            for sink in cfg.sinks:
                f = fresh.freshness(view, sink)
                newest = None if f.lag_ms is None else now - f.lag_ms
                if lag == 0 and mark is not None and mark.ts_ms:
                    newest = max(newest or 0, mark.ts_ms)
                rows.append(
                    {
                        "view": view,
                        "sink": sink,
                        "consumer_lag": lag,
                        "time_lag_ms": None if newest is None else max(0, now - newest),
                        "watermark_lsn": None if wm is None else format_lsn(wm),
                        "applied_lsn": None
                        if f.applied_lsn is None
                        else format_lsn(f.applied_lsn),
                        "events_per_s": round(
                            sum(self._rates.get(t, 0.0) for t in topics), 1
                        ),
                        "unloaded_since_ms": fresh.unloaded_since(view, sink),
                        "unloaded_load": fresh.unloaded_load(view, sink),
                        "definition_changed": changed.get((view, sink)),
                        "history": [],
                    }
                )
        return {
            "generated_ts_ms": now,
            "services": self.services,
            "connector": self.connector,
            "slot_lsn": None
            if tracker.slot_lsn is None
            else format_lsn(tracker.slot_lsn),
            "dead_letters": self.dead_letters,
            "views": rows,
            "snapshots": list(self.snapshots),
            "interval_s": self.interval_s,
        }

    def _probe(self) -> dict[str, str]:
        svc = self.svc
        out: dict[str, str] = {}
        try:
            svc.tracker.refresh(0.0)
            out["postgres (slot)"] = (
                "ok" if svc.tracker.slot_lsn is not None else "no slot yet"
            )
            out["kafka"] = "ok" if svc.tracker.ends else "no topics yet"
        except Exception as exc:  # noqa: BLE001 (shown on the page)
            out["postgres/kafka"] = str(exc)[:200]
        out.update(probe_stores(svc))
        return out


@router.get("/v1/status", summary="Pipeline figures for the status page")
async def status_json(request: Request) -> JSONResponse:
    request.app.state.service.authorize_operator(presented_key(request))
    monitor: StatusMonitor = request.app.state.monitor
    return JSONResponse(monitor.latest())


@router.get("/status", include_in_schema=False)
async def status_html(request: Request) -> HTMLResponse:
    request.app.state.service.authorize_operator(presented_key(request))
    monitor: StatusMonitor = request.app.state.monitor
    figures = json.dumps(monitor.latest()).replace("<", "\\u003c")
    html = _PAGE.read_text().replace("/*INITIAL*/null", figures)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
