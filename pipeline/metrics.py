"""Prometheus metrics and the worker's health endpoints.

``GET /metrics`` (Prometheus text), ``GET /healthz`` (the loop is alive: it
turned within the last ``stall_s`` seconds) and ``GET /readyz`` (the worker
has partitions assigned, its sinks are open and it is not backing off).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from pipeline.timelag import Newest

EVENTS = Counter("readside_events_total", "Change events decoded", ["topic"])
OPS = Counter(
    "readside_ops_total",
    "Document ops by outcome (applied, stale, rejected)",
    ["sink", "outcome"],
)
BATCHES = Counter("readside_batches_total", "Batches committed")
WRITE_SECONDS = Histogram(
    "readside_sink_write_seconds",
    "Latency of one sink write",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEAD_LETTERS = Counter(
    "readside_dead_letters_total", "Records sent to the DLQ", ["reason"]
)
REREADS = Counter(
    "readside_aggregate_reads_total",
    "Statements that re-read aggregate roots (one per view per batch)",
    ["view"],
)
RETRIES = Counter("readside_retries_total", "Transient failures retried", ["sink"])
REDELIVERED = Counter(
    "readside_redelivered_total",
    "Copies of changes Debezium sent again, recognised and skipped",
    ["topic"],
)
#: readside_time_lag_ms, worked out when read (pipeline.timelag)
TIME_LAG = Newest()
REGISTRY.register(TIME_LAG)
APPLIED_LSN = Gauge("readside_applied_lsn", "Last applied source LSN", ["view", "sink"])
CAPTURE_PROBLEMS = Gauge(
    "readside_source_capture_problems",
    "Ways the publication or the connector's config, changed by hand, keep "
    "changes of the worker's tables from the stream (pipeline.publication)",
)
DEFINITION_CHANGED = Gauge(
    "readside_view_definition_changed",
    "1 while a sink's documents of a view were written whole by another "
    "definition than the config's (pipeline.definitions)",
    ["view", "sink"],
)
UNLOADED = Gauge(
    "readside_view_unloaded",
    "1 while the sink holds the view without its load mark (pipeline.loaded)",
    ["view", "sink"],
)


class Health:
    """Shared state the loop updates and the HTTP handlers read."""

    def __init__(self, stall_s: float = 120.0) -> None:
        self.stall_s = stall_s
        self.last_turn = time.monotonic()
        self.assigned = 0
        self.sinks_open = False
        self.backing_off = False

    def turn(self) -> None:
        self.last_turn = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_turn < self.stall_s

    def ready(self) -> bool:
        return self.alive() and self.sinks_open and not self.backing_off


def serve(health: Health, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the endpoints on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                ok = health.alive()
                body, ctype, code = (
                    (b"ok\n" if ok else b"stalled\n"),
                    "text/plain",
                    (200 if ok else 503),
                )
            elif self.path == "/readyz":
                ok = health.ready()
                body, ctype, code = (
                    (b"ready\n" if ok else b"not ready\n"),
                    ("text/plain"),
                    (200 if ok else 503),
                )
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(
        target=server.serve_forever, name="readside-metrics", daemon=True
    ).start()
    return server
