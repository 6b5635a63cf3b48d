"""The pgsync runner: its schema, its commands, and its timed initial sync.

:class:`PgSync` runs pgsync's commands from its virtualenv
(:mod:`bench.pgsync.install`) on one :class:`~bench.snapshot_setup.BenchSource`
database, with an environment of its own (``PG_*``, ``ELASTICSEARCH_URL``,
``REDIS_URL`` with a database number of its own, ``CHECKPOINT_PATH`` in the
run's work directory), and removes everything it made
(:meth:`PgSync.cleanup`). :func:`schema_json` is pgsync's schema of the
document of readside's view ``customers``; :func:`choose_client` picks its
search client; :func:`bench_pgsync` times its initial sync.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import elasticsearch
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from bench.pgsync.install import clean_env
from bench.sinks import need_sink
from bench.snapshot_setup import AGG_VIEW, BenchSource
from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.redis import RedisSinkConfig
from pipeline.config import Config

logger = logging.getLogger(__name__)

#: pgsync's own clock, printed when its command ends: `` 0:00:12.3 (12.30 sec)``.
_TIMER = re.compile(r"\(([0-9.]+) sec\)")


def schema_json(database: str, index: str) -> list[dict[str, Any]]:
    """pgsync's schema of the document of readside's view ``customers``
    (:data:`bench.snapshot_setup.AGG_VIEW_CFG`): the same fields, labels and
    nesting. pgsync has no ``order_by`` for child arrays."""

    def one_to_many(parent: str, child: str) -> dict[str, Any]:
        return {
            "variant": "object",
            "type": "one_to_many",
            "foreign_key": {"parent": [parent], "child": [child]},
        }

    product = {
        "table": "products",
        "columns": ["name", "price"],
        "label": "product",
        "relationship": {
            "variant": "object",
            "type": "one_to_one",
            "foreign_key": {"parent": ["product_id"], "child": ["id"]},
        },
    }
    lines = {
        "table": "order_lines",
        "columns": ["id", "qty", "product_id"],
        "label": "lines",
        "relationship": one_to_many("id", "order_id"),
        "children": [product],
    }
    orders = {
        "table": "orders",
        "columns": ["id", "status", "placed", "total"],
        "label": "orders",
        "relationship": one_to_many("id", "customer_id"),
        "children": [lines],
    }
    root = {
        "table": "customers",
        "columns": ["id", "name", "tier", "email", "since"],
        "children": [orders],
    }
    return [{"database": database, "index": index, "nodes": root}]


class PgSync:
    """pgsync's commands, from its virtualenv, on one BenchSource database."""

    def __init__(
        self,
        bin_dir: Path,
        src: BenchSource,
        base: Config,
        workdir: Path,
        redis_db: int,
        client: str = "elasticsearch",
    ) -> None:
        self.bin_dir = bin_dir
        self.client = client
        self.src = src
        self.workdir = workdir
        self.index = f"{src.prefix}-pgsync-{AGG_VIEW}"
        # pgsync names its replication slot and Redis queue after
        # "<database>_<index>" without anything but [0-9a-zA-Z_].
        self.name = re.sub("[^0-9a-zA-Z_]+", "", f"{src.db.lower()}_{self.index}")
        self.schema = workdir / "pgsync-schema.json"
        self.schema.write_text(json.dumps(schema_json(src.db, self.index), indent=2))
        self.es_url = es_url(base)
        self.redis = queue_redis(base, redis_db)
        pg = conninfo_to_dict(src.admin_dsn)
        self.env = {
            **clean_env(),
            "PG_HOST": str(pg.get("host", "127.0.0.1")),
            "PG_PORT": str(pg.get("port", 5432)),
            "PG_USER": str(pg.get("user", "postgres")),
            "ELASTICSEARCH_URL": self.es_url,
            "REDIS_URL": redis_url(self.redis),
            "CHECKPOINT_PATH": str(workdir),
            "CONSOLE_LOGGING_HANDLER_MIN_LEVEL": "WARNING",
        }
        if pg.get("password"):
            self.env["PG_PASSWORD"] = str(pg["password"])
        if client == "opensearch":  # pgsync's switch to its opensearch-py client
            self.env["OPENSEARCH"] = "true"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.bootstrapped = False

    def _cmd(self, tool: str, *args: str) -> list[str]:
        return [str(self.bin_dir / tool), "--config", str(self.schema), *args]

    def run(self, tool: str, *args: str, timeout_s: float) -> dict[str, Any]:
        """One pgsync command to its end: wall and own seconds, peak RSS."""
        log = self.workdir / f"{tool}{'-'.join(args)}.log"
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                self._cmd(tool, *args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
            killer = threading.Timer(timeout_s, proc.kill)
            killer.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        text = log.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {proc.returncode} after "
                f"{wall:.0f}s: {text.strip()[-1500:]}"
            )
        own = _TIMER.findall(text)
        return {
            "wall_s": wall,
            "own_s": float(own[-1]) if own else None,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        }

    def bootstrap(self, timeout_s: float) -> dict[str, Any]:
        self.bootstrapped = True
        return self.run("bootstrap", timeout_s=timeout_s)

    def start_daemon(self) -> None:
        with open(self.workdir / "pgsync-daemon.log", "wb") as log:
            self.daemon = subprocess.Popen(
                self._cmd("pgsync", "--daemon"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )

    def stop_daemon(self) -> None:
        proc, self.daemon = self.daemon, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)

    def daemon_log_tail(self) -> str:
        path = self.workdir / "pgsync-daemon.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def cleanup(self) -> None:
        """Everything pgsync made; a failing step does not stop the rest."""
        _attempt("pgsync daemon", self.stop_daemon)
        if self.bootstrapped:
            _attempt(
                "pgsync teardown",
                lambda: self.run("bootstrap", "--teardown", timeout_s=180),
            )
        _attempt("pgsync replication slots", self._drop_slots)
        _attempt("pgsync index", self._drop_index)
        _attempt("pgsync redis keys", self._drop_redis)

    def _drop_slots(self) -> None:
        # Its slot, and "_tmp_": the slot its validation creates and drops.
        with psycopg.connect(self.src.admin_dsn, autocommit=True) as conn:
            for _ in range(30):
                rows = conn.execute(
                    "SELECT slot_name, active_pid FROM pg_replication_slots "
                    "WHERE database = %s AND slot_name IN (%s, '_tmp_')",
                    (self.src.db, self.name),
                ).fetchall()
                if not rows:
                    return
                for slot, pid in rows:
                    if pid is not None:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        continue
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                time.sleep(1)
        raise RuntimeError(f"replication slot {self.name} still in use")

    def _drop_index(self) -> None:
        es = elasticsearch.Elasticsearch(self.es_url)
        es.options(ignore_status=404).indices.delete(index=self.index)
        es.close()

    def _drop_redis(self) -> None:
        client = self.redis.connect()
        keys = list(client.scan_iter(match=f"queue:{self.name}*"))
        if keys:
            client.delete(*keys)
        client.close()


def choose_client(es_url: str, wanted: str) -> tuple[str, str | None]:
    """pgsync's search client for this Elasticsearch, and why if not its own.

    pgsync 7.3 pins elasticsearch-py 7.17, whose product check sends ``GET /``
    before any other request, and its ``SearchClient`` reads the version from
    ``GET /`` too. The stack's Elasticsearch (the integ-test distribution:
    modules apm, transport-netty4, x-pack-core, x-pack-security) has no
    ``rest-root`` module, so ``GET /`` answers 405 and every pgsync command
    fails. ``auto`` then takes pgsync's other client, opensearch-py
    (``OPENSEARCH=true``), which sends the same bulk and index requests
    without those two calls.
    """
    if wanted != "auto":
        return wanted, None
    es = elasticsearch.Elasticsearch(es_url)
    try:
        es.perform_request("GET", "/", headers={"accept": "application/json"})
        return "elasticsearch", None
    except elasticsearch.ApiError as exc:
        why = (
            f"GET / on {es_url} answers {exc.meta.status} ({exc.message}): "
            "elasticsearch-py 7.17 (pinned by pgsync) refuses a server whose "
            "GET / fails (product check), and pgsync's SearchClient calls it; "
            "pgsync runs with its opensearch-py client (OPENSEARCH=true) instead"
        )
        logger.warning("pgsync client: %s", why)
        return "opensearch", why
    finally:
        es.close()


def es_url(base: Config) -> str:
    """The first host of the stack's Elasticsearch."""
    return str(need_sink(base, ElasticsearchSinkConfig).hosts[0])


def queue_redis(base: Config, db: int) -> RedisSinkConfig:
    """The Redis sink's server, database ``db`` (pgsync's queue), logged in
    as the sink is."""
    sink = need_sink(base, RedisSinkConfig)
    parts = urlsplit(sink.url.get_secret_value())
    url = urlunsplit(parts._replace(path=f"/{db}"))
    return sink.model_copy(update={"url": SecretStr(url)})


def redis_url(sink: RedisSinkConfig) -> str:
    """pgsync's ``REDIS_URL`` of ``sink``: its URL with its ``username`` and
    ``password``, URL-quoted, in it (pgsync takes no other login)."""
    parts = urlsplit(sink.client_url())
    if sink.password is None:
        return urlunsplit(parts)
    user = quote(sink.username, safe="") if sink.username else parts.username or ""
    login = f"{user}:{quote(sink.password.get_secret_value(), safe='')}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def _attempt(what: str, step: Any) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - cleanup goes on
        logger.warning("cleanup failed what=%s error=%s", what, exc)


def bench_pgsync(
    pgs: PgSync, es: elasticsearch.Elasticsearch, args: argparse.Namespace
) -> dict[str, Any]:
    logger.info("pgsync bootstrap database=%s", pgs.src.db)
    boot = pgs.bootstrap(args.run_timeout)
    logger.info("pgsync initial sync index=%s", pgs.index)
    row = pgs.run("pgsync", timeout_s=args.run_timeout)
    es.indices.refresh(index=pgs.index)
    held = int(es.count(index=pgs.index)["count"])
    ids = set(_ids(es, pgs.index))
    want = {str(i) for i in range(1, args.roots + 1)}
    seconds = row["own_s"] or row["wall_s"]
    return {
        **row,
        "bootstrap_s": boot["wall_s"],
        "roots": args.roots,
        "docs_held": held,
        "missing_roots": len(want - ids),
        "extra_docs": len(ids - want),
        "roots_per_s": args.roots / seconds,
        "roots_per_s_wall": args.roots / row["wall_s"],
    }


def _ids(es: elasticsearch.Elasticsearch, index: str) -> Iterator[str]:
    resp = es.search(index=index, scroll="2m", size=5000, source=False, sort=["_doc"])
    scroll = resp.get("_scroll_id")
    try:
        while resp["hits"]["hits"]:
            for hit in resp["hits"]["hits"]:
                yield str(hit["_id"])
            resp = es.scroll(scroll_id=scroll, scroll="2m")
            scroll = resp.get("_scroll_id")
    finally:
        if scroll:
            es.options(ignore_status=404).clear_scroll(scroll_id=scroll)
