"""What the HTTP server shares between requests: the read client, the
watermark tracker and its sampler thread, the thread pool for store calls and
the API keys.

Store calls are blocking (redis-py, pymongo, elasticsearch-py), so each runs
on the pool with the configured timeout; a get by id whose first store reads
on the event loop (Redis) is answered there, with no thread. A read with
``min_lsn`` waits for the watermark on the event loop (polling memory, no
thread held), and the sampler thread samples every 20 ms while anyone waits,
every second else.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fastapi import Request

from pipeline.apiconfig import ApiKey
from pipeline.config import Config
from pipeline.errors import ConfigError, ReadsideError
from query.answer import Answer
from query.client import ReadClient
from query.errors import NotYetFresh, OutOfFocus, UnknownView
from query.watermark import WatermarkTracker

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the watermark is sampled while a request waits for an LSN (a
#: sample is one SQL query and three Kafka requests, asked together), and
#: while none does (the status page and answers' watermarks).
BUSY_INTERVAL_S = 0.02
IDLE_INTERVAL_S = 1.0


class Unauthorized(ReadsideError):
    """No API key, or a key that is not configured (401)."""

    status = 401
    #: the ``WWW-Authenticate`` challenge (the operators' routes ask a
    #: browser for Basic credentials: the key as the password)
    challenge = "Bearer"


def presented_key(request: Request, x_api_key: str | None = None) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY``, Basic
    credentials whose password is the key (a browser's prompt), or
    ``X-Api-Key``."""
    return key_from_headers(
        request.headers.get("authorization"),
        x_api_key or request.headers.get("x-api-key"),
    )


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of an ``Authorization`` header (Bearer, or Basic whose
    password is the key), else of ``X-Api-Key``; ``None``: no key."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return ""  # presented, and matches no key
        return decoded.partition(":")[2]
    return x_api_key


class Forbidden(ReadsideError):
    """The key may not read this view (403)."""

    status = 403


class StoreTimeout(ReadsideError):
    """A store call took longer than ``api.request_timeout_s`` (504)."""

    status = 504


class Service:
    """Shared state of one ``readside serve`` process.

    Args:
        config: the pipeline's configuration; its ``api`` section is used.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = config.api
        self.views = config.effective_views()  # fixed once loaded
        if not self.api.keys and not self.api.anonymous:
            raise ConfigError(
                "api.keys: readside serve needs at least one API key, or "
                "api.anonymous: true to answer requests without one (on a "
                "trusted network only)"
            )
        for key in self.api.keys:
            known = config.effective_views()
            unknown = [v for v in key.views if v != "*" and v not in known]
            if unknown:
                raise ConfigError(
                    f"api.keys[{key.name}]: unknown view(s) {', '.join(unknown)}"
                )
        self.tracker = WatermarkTracker(config)
        self.client = ReadClient(
            config, watermarks=self.tracker, wait_s=self.api.min_lsn_wait_s
        )
        self.executor = ThreadPoolExecutor(32, thread_name_prefix="readside-api")
        self.waiters = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.client.warm()
        self.tracker.refresh(0.0)  # answers carry a watermark from the first one
        self._sampler = threading.Thread(
            target=self._sample_loop, name="readside-watermark", daemon=True
        )
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sampler is not None:
            self._sampler.join(10)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.tracker.close()

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.tracker.refresh(0.0)
            interval = BUSY_INTERVAL_S if self.waiters else IDLE_INTERVAL_S
            # one sample per interval, however long a sample took
            self._wake.wait(max(0.0, interval - (time.monotonic() - began)))
            self._wake.clear()

    # -- per request -----------------------------------------------------------

    def _key(self, presented: str | None) -> ApiKey | None:
        """The configured key presented; ``None`` for a request without one
        when ``api.anonymous`` allows it.

        Raises:
            Unauthorized: a key is needed and none matches.
        """
        if presented is None and self.api.anonymous:
            return None
        key: ApiKey | None = None
        given = (presented or "").encode()
        for candidate in self.api.keys:
            if hmac.compare_digest(given, candidate.key.get_secret_value().encode()):
                key = candidate
        if key is None:
            raise Unauthorized("a valid API key is required")
        return key

    def authorize_operator(self, presented: str | None) -> None:
        """Allow the operators' routes to the request.

        Raises:
            Unauthorized: a key is needed and none matches.
            Forbidden: the key is not an operator's.
        """
        try:
            key = self._key(presented)
        except Unauthorized as exc:
            exc.challenge = 'Basic realm="readside"'
            raise
        if key is not None and not key.operator:
            raise Forbidden(f"key {key.name!r} is not an operator key")

    def authorize(self, presented: str | None, view: str | None) -> ApiKey | None:
        """The key of the request (``None``: no key, ``api.anonymous``).

        Raises:
            Unauthorized: a key is needed and none matches.
            UnknownView: ``view`` is not configured.
            Forbidden: the key may not read ``view``.
        """
        key = self._key(presented)
        if view is not None:
            if view not in self.views:
                raise UnknownView(view, self.readable(key))
            base = self.config.focuses[key.focus].view if key and key.focus else view
            if key is not None and not key.may_read(base):
                raise Forbidden(f"key {key.name!r} may not read view {view!r}")
        return key

    def readable(self, key: ApiKey | None) -> list[str]:
        """The views ``key`` may ask for (named in a 404: never another
        site's views or focuses)."""
        if key is None:
            return list(self.views)
        if key.focus is not None:
            base = self.config.focuses[key.focus].view
            return (
                [base, self.config.focus_view(key.focus)] if key.may_read(base) else []
            )
        return [v for v in self.views if key.may_read(v)]

    def resolve(self, key: ApiKey | None, view: str) -> str:
        """The view that answers ``view`` for ``key``: with a key bound to a
        focus, the focus's derived view.

        Raises:
            OutOfFocus: the key's focus does not cover ``view`` (403).
        """
        if key is None or key.focus is None:
            return view
        own = self.config.focus_view(key.focus)
        base = self.config.focuses[key.focus].view
        if view in (base, own):
            return own
        raise OutOfFocus(view, key.focus, [base, own])

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a blocking store call on the pool, within the request timeout."""
        return await self._timed(self._on_pool(fn))

    async def get(self, view: str, doc_id: str) -> Answer:
        """Get by id within the request timeout: on the event loop when the
        view's first store reads there, else on the pool
        (:meth:`ReadClient.aget`)."""
        return await self._timed(self.client.aget(view, doc_id, self._on_pool))

    async def _on_pool(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _timed(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.api.request_timeout_s):
                return await work
        except TimeoutError:
            raise StoreTimeout(
                f"the store did not answer within {self.api.request_timeout_s}s"
            ) from None

    async def await_lsn(self, view: str, lsn: int | None) -> None:
        """Wait (without holding a thread) for the view's watermark to reach
        ``lsn``; no-op when ``lsn`` is None.

        Raises:
            NotYetFresh: ``api.min_lsn_wait_s`` passed first.
        """
        if lsn is None:
            return
        start = time.monotonic()
        self.waiters += 1
        self._wake.set()
        try:
            while True:
                mark = self.tracker.watermark(view)
                if mark is not None and mark >= lsn:
                    return
                waited = time.monotonic() - start
                if waited >= self.api.min_lsn_wait_s:
                    raise NotYetFresh(view, lsn, mark, waited)
                await asyncio.sleep(0.01)
        finally:
            self.waiters -= 1


def probe_stores(svc: Service) -> dict[str, str]:
    """``ok`` or the error, per sink: one read by id of a view it holds."""
    out: dict[str, str] = {}
    for name in svc.config.sinks:
        view = next(
            (v for v, c in svc.config.effective_views().items() if name in c.sinks),
            None,
        )
        if view is None:
            continue
        try:
            svc.client.sink(name).fetch(view, ["readyz-probe"])
            out[name] = "ok"
        except ReadsideError as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    return out
