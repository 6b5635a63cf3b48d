"""``python -m bench api``: the read API against ReadClient and raw Redis, and
commit-to-readable latency under a steady write load.

One run, on the local stack, with a pipeline of its own (database, connector,
topics, worker, ``readside serve``; all removed afterwards):

(a) get-by-id of the same documents, ``--requests`` calls at
    ``--concurrency``: through HTTP (``GET /v1/views/items/docs/{id}``) and as
    a raw Redis ``GET`` of the document's key, both loaded by the same client
    in a process of its own (:mod:`bench.api_load`: one asyncio loop,
    ``--concurrency`` keep-alive connections, one request in flight on each);
    through :class:`query.ReadClient` in this process on ``--concurrency``
    threads; and the HTTP load against the server alone
    (:mod:`bench.api_ceiling`) answering a constant, once through ASGI (the
    most a handler behind it can reach) and once as get by id is written
    (:mod:`query.wire`: the most get by id can reach with a store that
    answers at once).
    Requests/s, p50, p99 and the ratios to raw Redis.
(b) commit-to-readable: while a process of its own updates random rows at
    ``--load-rate`` transactions per second on a schedule
    (:mod:`bench.api_writes`), ``--probes`` probes each
    commit a new value and time until the API returns it, once with
    ``min_lsn`` (one request that waits) and once by polling every 5 ms.

``--server-code DIR`` runs ``readside serve`` from another checkout (its
directory first on ``PYTHONPATH``), to measure two versions of the server
with the same load; ``--server-workers N`` runs it as N server processes
(``readside serve --workers N``).

The view has the Redis and Elasticsearch sinks: FerretDB (the local stack's
MongoDB) cannot keep up with the write load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from bench import report
from bench.api_load import load_in_child
from bench.api_stats import markdown, timed_calls
from bench.scenario import add_admin_dsn, admin_dsn, kafka_access, plain
from bench.sinks import need_sink
from connectors import debezium
from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.redis import RedisSinkConfig
from connectors.redis.sink import RedisSink
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.worker import build_sinks
from query import ReadClient, commit_lsn

logger = logging.getLogger("bench.api")

ROWS = 10_000
VIEW = "items"


class Pipeline:
    """A throwaway database, connector, worker and server on the local stack."""

    def __init__(
        self,
        base: Config,
        workdir: Path,
        admin_dsn: str,
        server_code: str | None = None,
        server_workers: int = 1,
    ) -> None:
        self.server_code = server_code
        self.server_workers = server_workers
        self.suffix = uuid.uuid4().hex[:8]
        self.prefix = f"benchapi{self.suffix}"
        self.admin_dsn = admin_dsn
        self.db = f"rs_bench_api_{self.suffix}"
        self.dsn = admin_dsn.rsplit("/", 1)[0] + f"/{self.db}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE items (id int PRIMARY KEY, val bigint NOT NULL, "
                "name text NOT NULL, price int NOT NULL)"
            )
            conn.execute(
                "INSERT INTO items SELECT i, 0, 'item ' || i, i % 1000 "
                f"FROM generate_series(1, {ROWS}) AS i"
            )
        self.path = workdir / "readside.yaml"
        self.path.write_text(yaml.safe_dump(self._config(base), sort_keys=False))
        self.config = config_mod.load(self.path)

    def _config(self, base: Config) -> dict[str, Any]:
        self.port = free_port()
        return {
            "source": {
                "dsn": self.dsn,
                "tables": ["public.items"],
                "slot": f"rs_{self.prefix}",
                "publication": f"rs_{self.prefix}",
                "topic_prefix": self.prefix,
                "heartbeat_ms": 500,
            },
            "kafka": {
                **kafka_access(base),
                "group_id": f"{self.prefix}-group",
                "dlq_topic": f"{self.prefix}.dlq",
                "checkpoint_topic": f"{self.prefix}.checkpoints",
            },
            "connect": {**plain(base.connect), "connector": f"{self.prefix}-pg"},
            "sinks": {
                "redis": plain(need_sink(base, RedisSinkConfig)),
                "elasticsearch": {
                    **plain(need_sink(base, ElasticsearchSinkConfig)),
                    "index_prefix": f"{self.prefix}-",
                },
            },
            "views": {
                VIEW: {
                    "table": "public.items",
                    "sinks": ["redis", "elasticsearch"],
                    "sink_options": {"redis": {"target": f"{self.prefix}:items"}},
                }
            },
            "worker": {"batch_size": 500, "metrics_port": 0},
            "api": {"port": self.port, "max_page_size": 100, "anonymous": True},
        }

    @property
    def _cli(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "--config", str(self.path)]

    def _spawn(self, *args: str, code: str | None = None) -> None:
        log = (self.workdir / f"{args[0]}.log").open("wb")
        env = dict(os.environ)
        if code is not None:  # first on the path: `-m` puts the cwd there
            env["PYTHONPATH"] = os.pathsep.join([code, env.get("PYTHONPATH", "")])
        self.procs.append(
            subprocess.Popen(
                [*self._cli, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=code,
            )
        )

    def start(self) -> None:
        debezium.apply(self.config)
        debezium.wait_running(self.config)
        self._spawn("worker")
        # one process: no option, so that --server-code may name older code
        many = self.server_workers > 1
        workers = ["--workers", str(self.server_workers)] if many else []
        self._spawn("serve", *workers, code=self.server_code)
        if not answering(f"{self.base}/healthz", 60, self.procs[-1]):
            raise RuntimeError(f"readside serve did not start; see {self.workdir}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_loaded(self, timeout_s: float = 300) -> None:
        """Until the last row's document is readable with min_lsn."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            lsn = commit_lsn(conn)
        with ReadClient(self.config, wait_s=timeout_s) as client:
            client.get(VIEW, str(ROWS), min_lsn=lsn)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            debezium.delete(self.config)
            time.sleep(2)
            debezium.drop_slot(self.config, timeout_s=60)
        finally:
            for sink in build_sinks(self.config, list(self.config.sinks)).values():
                assert isinstance(sink, RedisSink | ElasticsearchSink)  # its sinks
                sink.drop(VIEW)
                sink.close()
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            self._drop_topics()

    def _drop_topics(self) -> None:
        admin = kafkaclient.admin(self.config.kafka)
        mine = [t for t in admin.list_topics(timeout=10).topics if self.prefix in t]
        if mine:
            for fut in admin.delete_topics(mine, operation_timeout=30).values():
                fut.result()
        group = self.config.kafka.group_id
        for fut in admin.delete_consumer_groups([group]).values():
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                logger.warning("group not deleted group=%s error=%s", group, exc)


def free_port() -> int:
    """A local TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answering(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``url`` answers 200 within ``timeout_s`` (False at once if
    ``proc``, its server, exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def bench_reads(p: Pipeline, requests: int, concurrency: int) -> dict[str, Any]:
    """Get by id: HTTP and raw Redis loaded from a process of their own,
    ReadClient on threads in this one; the same ids in the same order."""
    ids = [str(random.Random(i).randint(1, ROWS)) for i in range(requests)]
    load = {"requests": requests, "concurrency": concurrency}
    with ReadClient(p.config) as client:
        redis_sink: Any = client.sink("redis")
        layout = redis_sink._layout(VIEW)  # the document key, as the sink names it
        keys = [layout.doc_key(i) for i in ids]
        redis_cfg = need_sink(p.config, RedisSinkConfig)

        def client_get(i: int) -> None:
            if client.get(VIEW, ids[i]).doc is None:
                raise RuntimeError(f"client: no document {ids[i]}")

        http = {
            **load,
            "kind": "http",
            "host": "127.0.0.1",
            "port": p.port,
            "targets": [f"/v1/views/{VIEW}/docs/{i}" for i in ids],
        }
        raw = {
            **load,
            "kind": "redis",
            # the raw GETs log in as the sink does
            "url": redis_cfg.client_url(),
            "options": redis_cfg.client_options(),
            "targets": keys,
        }
        timed_calls(client_get, min(200, requests), concurrency)  # warm
        return {
            "http": load_in_child(http),
            "redis": load_in_child(raw),
            "ceiling": bench_ceiling(p, http),
            "ceiling_wire": bench_ceiling(p, http, "wire"),
            "http_library": load_in_child({**http, "client": "library"}),
            "redis_library": load_in_child({**raw, "client": "library"}),
            "client": timed_calls(client_get, requests, concurrency),
        }


def bench_ceiling(p: Pipeline, http: dict[str, Any], *mode: str) -> dict[str, Any]:
    """The HTTP row's load against the server alone (:mod:`bench.api_ceiling`;
    ``mode`` ``"wire"``: the way get by id is written), answering with the
    bytes of a real answer."""
    body = p.workdir / "ceiling-body.json"
    body.write_bytes(httpx.get(p.base + http["targets"][0], timeout=10).content)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.api_ceiling", str(port), str(body), *mode],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not answering(f"http://127.0.0.1:{port}/healthz", 30, proc):
            raise RuntimeError("the ceiling server did not start")
        return load_in_child({**http, "port": port})
    finally:
        proc.terminate()
        proc.wait(10)


def bench_commit_to_read(
    p: Pipeline, probes: int, rate: float, threads: int
) -> dict[str, Any]:
    # The background writes come from a process of their own, on a schedule
    # (:mod:`bench.api_writes`); none at a rate of 0 (each probe's write is
    # then alone, as on a quiet site). Probes update rows 1-1000, the load
    # the others.
    writer = None
    if rate > 0:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.api_writes",
                p.dsn,
                str(rate),
                "1001",
                str(ROWS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    local = threading.local()

    def probe(mode: str) -> Callable[[int], None]:
        def run(i: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = psycopg.connect(p.dsn, autocommit=True)
                local.http = httpx.Client(base_url=p.base, timeout=30)
            ident = i % 1000 + 1
            value = time.time_ns()
            local.conn.execute(
                "UPDATE items SET val = %s WHERE id = %s", (value, ident)
            )
            lsn = commit_lsn(local.conn)
            url = f"/v1/views/{VIEW}/docs/{ident}"
            if mode == "min_lsn":
                doc = local.http.get(url, params={"min_lsn": lsn}).json()["doc"]
                if doc["val"] != value:
                    raise RuntimeError(f"min_lsn read missed its write {ident}")
                return
            while local.http.get(url).json()["doc"]["val"] != value:
                time.sleep(0.005)

        return run

    try:
        time.sleep(2)
        out: dict[str, Any] = {
            m: timed_calls(probe(m), probes, threads) for m in ("min_lsn", "poll")
        }
    finally:
        load = _stop_writes(writer)
    out["load_writes_per_s"] = load.get("writes_per_s", 0.0)
    out["load_behind_ms"] = load.get("behind_ms", 0.0)
    return out


def _stop_writes(writer: subprocess.Popen[str] | None) -> dict[str, Any]:
    """Stop the background writes; what they reached."""
    if writer is None:
        return {}
    stdout, _ = writer.communicate(input="", timeout=60)
    if writer.returncode != 0:
        raise RuntimeError(f"the background writer exited {writer.returncode}")
    reached: dict[str, Any] = json.loads(stdout)
    return reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench api", description=__doc__)
    parser.add_argument("--config", default=None, help="readside config of the stack")
    add_admin_dsn(parser)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight for get by id (HTTP, raw Redis, ReadClient)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="probe threads of commit-to-readable"
    )
    parser.add_argument(
        "--server-code",
        default=None,
        help="run readside serve from this checkout (e.g. /work/main)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="server processes of readside serve (its --workers)",
    )
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument(
        "--load-rate",
        type=float,
        default=100.0,
        help="background writes/s while commit-to-readable is probed (0: none)",
    )
    parser.add_argument("--out", default="bench/results/api.json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for noisy in ("elastic_transport", "urllib3", "pymongo", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = config_mod.load(args.config)
    args.admin_dsn = admin_dsn(base, args.admin_dsn)
    workdir = Path(args.workdir or f"/tmp/readside-bench-api-{uuid.uuid4().hex[:6]}")
    workdir.mkdir(parents=True, exist_ok=True)
    p = Pipeline(base, workdir, args.admin_dsn, args.server_code, args.server_workers)
    try:
        p.start()
        logger.info("loading %d rows", ROWS)
        p.wait_loaded()
        results: dict[str, Any] = {
            "machine": report.machine(base),
            "threads": args.threads,
            "concurrency": args.concurrency,
            "server_code": args.server_code or "this checkout",
            "server_workers": args.server_workers,
            "requests": args.requests,
            "probes": args.probes,
            "load_rate": args.load_rate,
        }
        logger.info("get by id: HTTP, raw Redis, client")
        results["reads"] = bench_reads(p, args.requests, args.concurrency)
        logger.info("commit to readable under load")
        results["commit_to_read"] = bench_commit_to_read(
            p, args.probes, args.load_rate, args.threads
        )
    finally:
        p.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    return 0
