"""The API's request metrics: every HTTP request counted and timed by its
route template (:class:`Measured`, the outermost layer of the app)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "readside_api_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "readside_api_request_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class Measured:
    """ASGI middleware: request count and latency by route template (a plain
    ASGI wrapper; Starlette's BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._latency: dict[str, Any] = {}
        self._count: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.run(self.app, scope, receive, send, time.perf_counter())

    async def run(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, start: float
    ) -> None:
        """Run ``app`` on an HTTP request that started at ``start``
        (``time.perf_counter``), and count and time it."""
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            self.observe(scope, status[0], start)

    def observe(self, scope: Scope, status: int, start: float) -> None:
        """Count and time one request (the labelled series kept, not looked
        up again on every request)."""
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = LATENCY.labels(route)
        latency.observe(time.perf_counter() - start)
        key = (route, method, status)
        count = self._count.get(key)
        if count is None:
            count = self._count[key] = REQUESTS.labels(route, method, str(status))
        count.inc()
