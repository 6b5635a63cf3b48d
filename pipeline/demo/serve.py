"""The demo's read API: ``readside serve`` beside the workers, and one
read-your-writes round trip through it.

The server runs as a subprocess (``python -m pipeline.cli serve``, log in
``.readside/demo/serve.log``) on ``api.host``/``api.port`` of the config, so
that ``demo --keep-running`` can leave it serving like the workers, and the
next demo stops it first (:func:`pipeline.demo.workers.stop_kept`).

The round trip is what a site does after a write: commit in PostgreSQL, take
:func:`query.commit_lsn` on the same connection, and read the document through
the API with ``min_lsn``; the API answers once the view's watermark reaches
that LSN, so the answer holds the write.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.console import Console

from pipeline.config import Config
from pipeline.demo import workers
from pipeline.errors import FatalError
from query import commit_lsn, format_lsn

logger = logging.getLogger(__name__)

LOG_NAME = "serve.log"
START_TIMEOUT_S = 30.0


def base_url(cfg: Config) -> str:
    host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 - a comparison, not a bind
    return f"http://{host}:{cfg.api.port}"


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def start(config_path: str | None, cfg: Config) -> subprocess.Popen[bytes]:
    """Start ``readside serve`` and wait until it answers ``/healthz``.

    Raises:
        FatalError: the port is taken, or the server exits or stays silent.
    """
    base = base_url(cfg)
    if _port_taken(base.split("//")[1].split(":")[0], cfg.api.port):
        raise FatalError(
            f"port {cfg.api.port} is taken: stop what listens there, set api.port "
            "in the config, or run the demo with --no-serve"
        )
    cmd = [sys.executable, "-m", "pipeline.cli"]
    if config_path:
        cmd += ["--config", config_path]
    cmd += ["serve"]
    workers.STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = workers.STATE_DIR / LOG_NAME
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise FatalError(
                f"readside serve exited with {proc.returncode}:\n" + "\n".join(tail)
            )
        try:
            if _get(f"{base}/healthz", 2.0)[0] == 200:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise FatalError(f"readside serve did not answer within {START_TIMEOUT_S}s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> bool:
    """SIGTERM the server; True when it shut down cleanly.

    uvicorn finishes the requests in flight, then re-raises the signal it
    caught, so a clean stop ends with -SIGTERM (or 0), not with an error code.
    """
    if proc.poll() is None:
        proc.terminate()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return code in (0, -signal.SIGTERM)


def _get(url: str, timeout_s: float) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or None) of a GET; HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - http URL built here
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return int(status), headers, body


def show_addresses(out: Console, cfg: Config, example: tuple[str, str]) -> None:
    """Where to read the views, the status page and the OpenAPI schema."""
    base = base_url(cfg)
    view, ident = example
    out.print(f"[bold]readside serve[/] answers at {base} (log in {workers.STATE_DIR})")
    out.print(f"  document:    {base}/v1/views/{view}/docs/{ident}")
    out.print(f"  search:      {base}/v1/views/customers/search?q=Hopper&size=3")
    out.print(f"  views:       {', '.join(cfg.views)}")
    out.print(f"  status page: {base}/status")
    out.print(f"  OpenAPI:     {base}/openapi.json")


@dataclass(frozen=True)
class RoundTrip:
    """One write in PostgreSQL read back through the API with ``min_lsn``."""

    view: str
    doc_id: str
    field: str
    value: str
    lsn: int
    status: int
    store: str
    elapsed_ms: float
    got: Any

    @property
    def seen(self) -> bool:
        return self.status == 200 and self.got == self.value


def read_your_writes(cfg: Config, view: str, customer_id: int) -> RoundTrip:
    """Rename a customer, then GET its document in ``view`` with ``min_lsn``."""
    value = f"Hopper {time.strftime('%H:%M:%S')}"
    with psycopg.connect(cfg.source.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(
            "UPDATE customers SET last_name = %s WHERE id = %s", (value, customer_id)
        )
        lsn = commit_lsn(conn)
    started = time.perf_counter()
    url = (
        f"{base_url(cfg)}/v1/views/{view}/docs/{customer_id}?min_lsn={format_lsn(lsn)}"
    )
    status, headers, body = _get(url, cfg.api.min_lsn_wait_s + 10)
    elapsed = (time.perf_counter() - started) * 1000
    doc = (body or {}).get("doc") or {}
    return RoundTrip(
        view,
        str(customer_id),
        "last_name",
        value,
        lsn,
        status,
        headers.get("x-readside-store", headers.get("X-Readside-Store", "?")),
        elapsed,
        doc.get("last_name"),
    )


def show_round_trip(out: Console, trip: RoundTrip) -> None:
    lsn = format_lsn(trip.lsn)
    out.print(
        f"UPDATE customers SET last_name = '{trip.value}' WHERE id = {trip.doc_id}; "
        f"commit_lsn = {lsn}"
    )
    out.print(
        f"GET /v1/views/{trip.view}/docs/{trip.doc_id}?min_lsn={lsn} -> "
        f"{trip.status} from {trip.store}"
    )
    if trip.seen:
        out.print(
            f"read-your-writes: the API answered in {trip.elapsed_ms:.0f} ms "
            f"with the new {trip.field} {trip.got!r}"
        )
    else:
        out.print(
            f"[red]read-your-writes failed[/]: {trip.field} is {trip.got!r} after "
            f"{trip.elapsed_ms:.0f} ms, expected {trip.value!r}"
        )
