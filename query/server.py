"""``readside serve``: the read API, health and metrics, and the status page.

Routes:

* ``/v1/views/{view}/...`` - reads (:mod:`query.routes`), JSON, with the
  answering store's freshness in ``X-Readside-*`` headers; API keys when
  configured.
* ``/healthz`` (the process serves), ``/readyz`` (every store answers),
  ``/metrics`` (Prometheus: request counts and latency by route).
* ``/status`` and ``/v1/status`` - the operators' page and its figures
  (:mod:`query.status_page`).
* ``/openapi.json`` - FastAPI's schema. (FastAPI's ``/docs`` viewer is off:
  it loads its assets from a CDN.)

Errors are JSON ``{"error": ..., "reason": ...}`` with the status the error
class names (400 bad input, 401/403 keys, 404 unknown view, 412 not yet
fresh, 503 store down, 504 store too slow).

With ``api.workers`` above 1 (``readside serve --workers N``), the process
started binds the port and runs N server processes on it (uvicorn's
supervisor: it restarts one that dies, and stops them all on SIGTERM or
SIGINT, each finishing its requests; a server process whose supervisor is
gone, even killed with SIGKILL, stops the same way). Each loads the same
config file and
keeps its own store clients and watermark sampler; their request metrics go
to files in a directory of the supervisor's (prometheus_client's
multiprocess mode), so ``/metrics`` from any of them counts every process's
requests.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import config as config_mod
from pipeline import logs
from pipeline.config import Config
from pipeline.errors import ConfigError, FatalError, ReadsideError, TransientError
from query import routes, status_page, wire
from query.errors import NotYetFresh, QueryError, StoreUnavailable
from query.fastpath import TEMPLATE, FastGet
from query.lsn import format_lsn
from query.measured import Measured
from query.service import (
    Forbidden,
    Service,
    Unauthorized,
    presented_key,
    probe_stores,
)

logger = logging.getLogger(__name__)

#: prometheus_client's multiprocess directory: set by the supervisor of
#: several server processes for all of them (read at import, so set before
#: they start).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the start of the name of a supervisor's metrics directory (then its pid)
METRICS_DIR = "readside-api-metrics-"
#: the supervisor's pid, for each of its server processes to follow
SUPERVISOR_ENV = "READSIDE_SERVE_SUPERVISOR"


def _error_body(exc: ReadsideError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, QueryError):
        body["reason"] = exc.reason
    if isinstance(exc, StoreUnavailable):
        body["stores"] = exc.stores
    if isinstance(exc, NotYetFresh):
        body["watermark_lsn"] = (
            None if exc.watermark is None else format_lsn(exc.watermark)
        )
        body["min_lsn"] = format_lsn(exc.min_lsn)
    return body


async def _readside_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReadsideError)
    return _error_response(exc)


def _error_response(exc: ReadsideError) -> Response:
    """The answer to a refused or failed request (also :mod:`query.fastpath`'s)."""
    if isinstance(exc, TransientError):  # a store failed outside the fallbacks
        logger.warning("store error status=503 error=%s", exc)
        return JSONResponse({"error": str(exc), "reason": "store"}, 503)
    status = int(getattr(exc, "status", 500))
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": exc.challenge}
    if isinstance(exc, NotYetFresh) and exc.watermark is not None:
        headers = {"X-Readside-Watermark-Lsn": format_lsn(exc.watermark)}
    if status >= 500:
        logger.warning("request failed status=%d error=%s", status, exc)
    return JSONResponse(_error_body(exc), status, headers=headers)


async def _bad_request(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
        for e in exc.errors()
    ]
    return JSONResponse(
        {"error": "; ".join(problems) or "bad request", "reason": "request"}, 400
    )


class BodyTooLarge(HTTPException):
    """A request body over ``api.max_body_bytes`` (an HTTPException, so that
    FastAPI's body parsing passes it on rather than answering 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body above the limit of {limit} bytes (api.max_body_bytes)"
        )


def _too_large_body(exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse({"error": exc.detail, "reason": "size"}, 413)


async def _too_large(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    return _too_large_body(exc)


def declared_over(scope: Scope, max_bytes: int) -> bool:
    """Whether the request declares a body longer than ``max_bytes``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) > max_bytes
    return False


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413,
    by its declared length before any of it is read, else once the bytes
    read pass the limit (the handler never holds more than that)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_over(scope, self.max_bytes):
            await _too_large_body(BodyTooLarge(self.max_bytes))(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # read outside a route's handlers
            if not started:
                await _too_large_body(exc)(scope, receive, send)


def create_app(config: Config, service: Service | None = None) -> ASGIApp:
    """The ASGI app of ``readside serve`` (tests may pass their own service):
    get by id on its lean path (:mod:`query.fastpath`), everything else
    through FastAPI; every request measured."""
    svc = service or Service(config)
    app = _fastapi_app(config, svc)
    get_by_id = next(
        r for r in routes.router.routes if getattr(r, "path", "") == TEMPLATE
    )

    def refused(exc: ReadsideError) -> ASGIApp:
        return _error_response(exc)

    def too_large(scope: Scope) -> ASGIApp | None:
        if declared_over(scope, config.api.max_body_bytes):
            return _too_large_body(BodyTooLarge(config.api.max_body_bytes))
        return None

    return Measured(FastGet(app, svc, get_by_id, refused, too_large))


def _fastapi_app(config: Config, svc: Service) -> FastAPI:
    monitor = status_page.StatusMonitor(svc)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.start()
        monitor.start()
        logger.info(
            "serving views=%s keys=%d",
            ",".join(config.effective_views()),
            len(config.api.keys),
        )
        try:
            yield
        finally:
            monitor.stop()
            await svc.client.aclose()
            svc.stop()
            logger.info("server stopped")

    app = FastAPI(
        title="readside",
        summary="Read models kept in step with PostgreSQL",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = svc
    app.state.monitor = monitor
    app.add_exception_handler(ReadsideError, _readside_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.include_router(routes.router)
    app.include_router(status_page.router)

    app.add_middleware(BodyLimit, max_bytes=config.api.max_body_bytes)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready or not for anyone (a load balancer's probe); which store
        failed and why for an operator only."""
        stores = await svc.call(lambda: probe_stores(svc))
        ok = all(v == "ok" for v in stores.values())
        body: dict[str, Any] = {"ready": ok}
        try:
            svc.authorize_operator(presented_key(request))
            body["stores"] = stores
        except (Unauthorized, Forbidden):
            pass
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        svc.authorize_operator(presented_key(request))
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app


def metrics_text() -> bytes:
    """What ``/metrics`` answers: this process's metrics, or every server
    process's when several share the port (:data:`MULTIPROC_ENV`)."""
    shared = os.environ.get(MULTIPROC_ENV)
    if not shared:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, shared)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def serve(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    config_path: str | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (uvicorn finishes requests in
    flight, then the lifespan closes the stores).

    ``workers`` (default ``api.workers``) above 1 runs that many server
    processes on the port, each loading the config file ``config`` was
    loaded from (``config_path``, as :func:`pipeline.config.load` finds it).
    """
    import uvicorn

    api = config.api
    count = api.workers if workers is None else workers
    if count < 1:
        raise ConfigError(f"--workers: at least 1 server process, not {count}")
    options: dict[str, Any] = {
        "host": host or api.host,
        "port": api.port if port is None else port,
        "log_level": "info",
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": api.keep_alive_s,
        "http": wire.protocol(),
    }
    if api.tls_cert is not None and api.tls_key is not None:
        options["ssl_certfile"] = str(api.tls_cert)
        options["ssl_keyfile"] = str(api.tls_key)
        if api.tls_key_password is not None:
            options["ssl_keyfile_password"] = api.tls_key_password.get_secret_value()
    if count == 1:
        uvicorn.Server(uvicorn.Config(create_app(config), **options)).run()
        return
    _preflight(config)
    _serve_processes(config_mod.config_file(config_path), count, options)


def _preflight(config: Config) -> None:
    """Refuse here, once, what every server process would refuse as it
    starts (else the supervisor would start them again and again): the app
    itself (keys, views, stores; no connection is made) and the TLS
    certificate and key.

    Raises:
        ConfigError: naming what is wrong.
    """
    create_app(config)
    api = config.api
    if api.tls_cert is None or api.tls_key is None:
        return
    password = api.tls_key_password
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            str(api.tls_cert),
            str(api.tls_key),
            None if password is None else password.get_secret_value(),
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"api.tls_cert, api.tls_key: not a certificate and its private key ({exc})"
        ) from exc


def _serve_processes(config_file: Path, count: int, options: dict[str, Any]) -> None:
    """Bind the port and supervise ``count`` server processes on it."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    sweep_metric_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{METRICS_DIR}{os.getpid()}-") as shared:
        # what the processes inherit: the config file the supervisor loaded,
        # and where their metrics meet
        os.environ[config_mod.CONFIG_ENV] = str(config_file.resolve())
        os.environ[MULTIPROC_ENV] = shared
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        uv = uvicorn.Config(
            f"{__name__}:process_app",
            factory=True,
            workers=count,
            log_config=_log_config(),
            **options,
        )
        supervisor = Multiprocess(uv, sockets=[uv.bind_socket()])
        supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise FatalError(
            f"readside serve: server process(es) {failed} could not start "
            "(their log above says why)"
        )


def sweep_metric_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the metrics directories of supervisors that are gone (a
    supervisor killed outright leaves its own behind); returns them.

    A directory is removed only when no process has the pid in its name: a
    live supervisor's, or one of another user's, stays.
    """
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{METRICS_DIR}*-*"):
        pid = path.name[len(METRICS_DIR) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) < 1 or not path.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except OSError:
            pass  # alive (PermissionError: someone else's process)
    return removed


def process_app() -> ASGIApp:
    """The app of one of several server processes (uvicorn's factory): the
    config file its supervisor loaded (``$READSIDE_CONFIG``, set by
    :func:`_serve_processes`)."""
    follow_supervisor(int(os.environ[SUPERVISOR_ENV]))
    return create_app(config_mod.load())


def follow_supervisor(pid: int, every_s: float = 0.5) -> threading.Thread:
    """Stop this server process (SIGTERM to itself: it finishes its requests)
    once its parent is no longer the supervisor ``pid``.

    A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its
    server processes: without this they would go on serving the config
    they loaded, holding the port, so that ``readside serve`` started
    again could not bind it.
    """

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every_s)
        logger.warning(
            "server process %d: its supervisor (pid %d) is gone; stopping",
            os.getpid(),
            pid,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="readside-supervisor", daemon=True)
    thread.start()
    return thread


def _log_config() -> dict[str, Any]:
    """This process's logging (the CLI's: its level, the format, quiet
    store clients), for uvicorn to set up in each server process."""
    return logs.dict_config(logging.getLogger().level)
