"""An isolated pipeline per test on the real local stack.

Each :class:`Pipeline` gets a unique suffix and from it its own PostgreSQL
database, topic prefix, replication slot, publication, connector, consumer
group, dead-letter and checkpoint topics, Redis key prefixes, Elasticsearch
index prefix and MongoDB database, so tests never see each other's data.
Workers run as subprocesses (``python -m pipeline.cli worker``) so that tests
can SIGKILL them.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import redis
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported at runtime
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors import debezium
from connectors.base import Sink
from connectors.debezium import ConnectClient
from connectors.elasticsearch.store import tls_options
from connectors.opensearch import OpenSearchSinkConfig
from connectors.opensearch.client import OpenSearchClient
from connectors.postgres import prepare_source
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config, StackConfig
from pipeline.dlq import DeadRecord, read_all
from pipeline.errors import FatalError, TransientError
from pipeline.groups import AppliedOffsets
from pipeline.roles import role_names, roles_sql
from pipeline.source.records import HEARTBEAT_TOPIC_PREFIX
from pipeline.sourceconfig import ConnectConfig, KafkaConfig
from pipeline.stack import client_secrets, kafka_users, keycloak
from pipeline.stack import opensearch_security as os_security
from pipeline.stack.ferretdb import ferretdb_client
from pipeline.stack.jvm import rest_user
from pipeline.stack.postgres import superuser_dsn
from pipeline.stack.redis_server import redis_admin, redis_client
from pipeline.verify import Drift, verify
from pipeline.views import build_views
from pipeline.worker import Worker, build_sinks, consumer_config

REPO = Path(__file__).resolve().parents[2]


def _as_role(dsn: str, user: str, password: str) -> str:
    return make_conninfo(
        **{**conninfo_to_dict(dsn), "user": user, "password": password}
    )


def stack_config() -> StackConfig:
    """The stack of ``$READSIDE_CONFIG`` or the default one, rooted at the repo."""
    path = os.environ.get(config_mod.CONFIG_ENV)
    cfg = config_mod.load(path).stack if path else StackConfig()
    if not Path(cfg.data_dir).expanduser().is_absolute():
        cfg = cfg.model_copy(update={"data_dir": str(REPO / cfg.data_dir)})
    return cfg


def _admin_dsn() -> str:
    """The source's superuser, with the password the stack keeps (or
    ``$READSIDE_TEST_PG_DSN``). Before any stack ran there is none: the
    DSN without it is refused, and conftest's stack probe says why."""
    if dsn := os.environ.get("READSIDE_TEST_PG_DSN"):
        return dsn
    stack = stack_config()
    try:
        return superuser_dsn(Path(stack.data_dir), stack.postgres_port)
    except FileNotFoundError:
        return f"postgresql://postgres@127.0.0.1:{stack.postgres_port}/postgres"


PG_ADMIN_DSN = _admin_dsn()


def capture_refs(capture: Path) -> dict[str, str]:
    """``connect`` settings naming the capture role's login in ``capture``
    (:meth:`Pipeline.make_roles`), which Kafka Connect reads itself."""
    return {
        "user_ref": f"${{file:{capture}:user}}",
        "password_ref": f"${{file:{capture}:password}}",
    }


SINKS = ("redis", "elasticsearch", "mongodb")
CONNECT_URL = "http://127.0.0.1:18083"


def opensearch_sink() -> dict[str, Any]:
    """The opensearch sink settings of the stack's node: HTTPS, its
    internal user's basic authentication, the stack's CA
    (``hosts``, ``username``, ``password``, ``ca_cert``)."""
    stack = stack_config()
    data = Path(stack.data_dir)
    try:
        return os_security.client(data, stack.opensearch_port)
    except FileNotFoundError:
        # never started secured: its views fail (the host is not trusted)
        return {"hosts": [f"https://127.0.0.1:{stack.opensearch_port}"]}


def redis_sink() -> dict[str, Any]:
    """The redis sink settings of the stack's Redis as readside's ACL user
    on its plain port (``url``, ``username``, ``password``)."""
    stack = stack_config()
    acl = redis_client(Path(stack.data_dir), stack.redis_tls_port)
    return {
        "url": f"redis://127.0.0.1:{stack.redis_port}/0",
        "username": acl["username"],
        "password": acl["password"],
    }


def mongodb_sink() -> dict[str, Any]:
    """The mongodb sink's ``uri`` of the stack's FerretDB as its backend's
    MongoDB role."""
    stack = stack_config()
    return {"uri": ferretdb_client(Path(stack.data_dir), stack.ferretdb_port)}


def opensearch_client(timeout_s: float = 30) -> OpenSearchClient:
    """A client of the stack's node as its internal user (the sink's)."""
    cfg = OpenSearchSinkConfig(type="opensearch", **opensearch_sink())
    auth = (cfg.username, cfg.password.get_secret_value()) if cfg.password else None
    return OpenSearchClient(cfg.hosts, auth, timeout_s, tls_options(cfg))


def connect_settings() -> dict[str, str]:
    """The ``connect`` settings of the stack's Kafka Connect: its URL and
    its REST API's login."""
    user = rest_user(Path(stack_config().data_dir))
    return {"url": CONNECT_URL, **user}


def registry_logins() -> tuple[dict[str, str], dict[str, str]]:
    """The ``kafka`` and the ``connect`` settings of the stack's schema
    registry logins: the worker's client (read-only) and the converter's,
    whose secret Kafka Connect reads from the stack's exported file."""
    data = Path(stack_config().data_dir)
    worker = keycloak.client_login(data, keycloak.WORKER_CLIENT)
    connect = keycloak.client_login(data, keycloak.CONNECT_CLIENT)
    if worker is None or connect is None:
        raise FileNotFoundError(f"no Keycloak clients kept in {data}: stack up first")
    exported = data / client_secrets.SECRETS_DIR / "registry-connect.properties"
    return (
        {"schema_registry_username": worker[0], "schema_registry_password": worker[1]},
        {
            "registry_username": connect[0],
            "registry_password_ref": f"${{file:{exported}:password}}",
        },
    )


def connect_client() -> ConnectClient:
    """A client of the stack's Kafka Connect REST API, logged in."""
    return ConnectClient.of(ConnectConfig(**connect_settings()))


def redis_admin_client() -> redis.Redis:
    """A client of the stack's Redis as its operator's user (every command:
    ``CLIENT LIST`` ...); the ``default`` user is off."""
    stack = stack_config()
    admin = redis_admin(Path(stack.data_dir), stack.redis_port)
    return redis.Redis.from_url(
        admin["url"], username=admin["username"], password=admin["password"]
    )


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``cond`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def time_lag_ms(port: int, view: str) -> dict[str, float]:
    """``readside_time_lag_ms`` of ``view`` per sink, as the worker whose
    metrics listen on ``port`` serves it now ({} while it does not listen)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line.startswith("readside_time_lag_ms{") and f'view="{view}"' in line:
            sink = line.split('sink="', 1)[1].split('"', 1)[0]
            out[sink] = float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class WorkerProc:
    """A worker subprocess and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def refused(self, timeout: float, what: str, secret: str) -> str:
        """Wait until the worker exits 2 (a store or the broker refused it at
        its start); its log, which must not show ``secret``."""
        code = wait_for(
            lambda: self.proc.poll() is not None and (self.proc.returncode,),
            timeout,
            what,
        )
        assert code == (2,), self.tail()
        text = self.log_text()
        assert secret not in text
        return text

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait up to ``timeout``; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def dump_stacks(self) -> None:
        """Every thread's stack into the worker's log (SIGUSR1)."""
        if self.alive():
            os.kill(self.pid, signal.SIGUSR1)


@dataclass
class ThreadWorker:
    """A :class:`Worker` run in a thread of the test, so that the test can
    reach into it (its views' counters, its consumer, a sink it wraps);
    stands in for a worker process in ``Pipeline.workers``."""

    worker: Worker
    thread: threading.Thread

    def alive(self) -> bool:
        return self.thread.is_alive()

    def tail(self, lines: int = 40) -> str:
        return f"(in-process worker: its log is the test's, last {lines} lines)"

    def kill(self) -> int:
        self.worker.stop()
        self.thread.join(60)
        return 0

    def dump_stacks(self) -> None:
        faulthandler.dump_traceback(all_threads=True)


def run_bench(
    out: Path, *args: str, timeout_s: float = 600
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``python -m bench ARGS --out OUT`` from the repository root; the JSON it
    wrote and the finished process (which must have exited 0)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:  # say where it was, not only that
        err = exc.stderr or b""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        raise AssertionError(
            f"bench did not finish within {timeout_s:.0f}s; its log:\n{err[-4000:]}"
        ) from None
    # the report (stdout) names each violation; the log (stderr) its context
    assert done.returncode == 0, (
        f"{done.stderr[-3000:]}\n--- report:\n{done.stdout[-3000:]}"
    )
    return json.loads(out.read_text()), done


def stack_kafka() -> dict[str, Any]:
    """The ``kafka`` settings of readside's clients on the local stack: the
    broker's SASL listener, as its SCRAM user."""
    stack = stack_config()
    return {
        "bootstrap_servers": f"127.0.0.1:{stack.kafka_sasl_port}",
        "client": kafka_users.scram_client(Path(stack.data_dir)),
    }


def build_config(
    suffix: str,
    dsn: str,
    tables: Sequence[str],
    views: Mapping[str, Any],
    worker: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML data of an isolated pipeline (sinks: redis, elasticsearch,
    mongodb), on the stack's authenticated endpoints: every Kafka client of
    readside's through the broker's SASL listener as its SCRAM user (Debezium
    writes through Connect's own listener), Redis as its ACL user, FerretDB
    as its backend's MongoDB role, OpenSearch over HTTPS as its internal
    user."""
    prefix = f"it{suffix}"
    registry_kafka, registry_connect = registry_logins()
    full_views: dict[str, Any] = {}
    for name, view in views.items():
        v = dict(view)
        v.setdefault("sinks", list(SINKS))
        opts = {k: dict(o) for k, o in (v.get("sink_options") or {}).items()}
        if "redis" in v["sinks"]:
            opts.setdefault("redis", {})["target"] = f"{prefix}:{name}"
        v["sink_options"] = opts
        full_views[name] = v
    return {
        "source": {
            "dsn": dsn,
            "tables": list(tables),
            "slot": f"rs_{prefix}",
            "publication": f"rs_{prefix}",
            "topic_prefix": prefix,
            "heartbeat_ms": 500,
        },
        "kafka": {
            **stack_kafka(),
            "group_id": f"{prefix}-group",
            "partitions": 3,
            "dlq_topic": f"{prefix}.dlq",
            "checkpoint_topic": f"{prefix}.checkpoints",
            "snapshot_topic": f"{prefix}.snapshots",
            **registry_kafka,
        },
        "connect": {
            **connect_settings(),
            **registry_connect,
            "connector": f"{prefix}-pg",
        },
        "sinks": {
            "redis": {"type": "redis", **redis_sink()},
            "elasticsearch": {
                "type": "elasticsearch",
                "hosts": ["http://127.0.0.1:19200"],
                "index_prefix": f"it-{suffix}-",
            },
            # the optional store (stack up --with opensearch): only views that
            # name it use it
            "opensearch": {
                "type": "opensearch",
                **opensearch_sink(),
                "index_prefix": f"it-{suffix}-",
            },
            "mongodb": {
                "type": "mongodb",
                **mongodb_sink(),
                "database": f"it_{suffix}",
            },
        },
        "views": full_views,
        "worker": {
            "batch_size": 500,
            "batch_timeout_ms": 100,
            "metrics_port": None,
            "backoff_initial_ms": 100,
            "backoff_max_ms": 1000,
            "shutdown_timeout_s": 20,
            "load_mark_check_s": 1.0,
            **(worker or {}),
        },
    }


@dataclass
class Pipeline:
    """One isolated pipeline: database, connector, topics, stores, workers."""

    suffix: str
    dbname: str
    dsn: str
    config_path: Path
    config: Config
    tmp_path: Path
    workers: list[WorkerProc | ThreadWorker] = field(default_factory=list)
    _connector: bool = False
    _applied: AppliedOffsets | None = None
    #: whether the pipeline runs on its least-privilege roles (least_privilege)
    _least: bool = False
    #: every role made for this pipeline (make_roles), dropped by close
    _made_roles: list[str] = field(default_factory=list)
    #: the Kafka settings it was made with, which close deletes its topics
    #: with (a test may rewrite the config with a wrong password)
    _made_kafka: KafkaConfig = field(init=False)

    def __post_init__(self) -> None:
        self._made_kafka = self.config.kafka

    def cli_args(self, *args: str) -> list[str]:
        """The command line of ``readside --config <this pipeline> ARGS``."""
        cmd = [sys.executable, "-m", "pipeline.cli", "--config", str(self.config_path)]
        return [*cmd, *args]

    def run_cli(
        self,
        *args: str,
        timeout: float = 300,
        ok: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``readside ARGS`` on this pipeline, run to its end (output kept);
        with ``ok`` it must exit 0."""
        run = subprocess.run(
            self.cli_args(*args),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        if ok:
            assert run.returncode == 0, (
                f"readside {' '.join(args)}: {run.stdout}{run.stderr}"
            )
        return run

    # -- source -----------------------------------------------------------
    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def sql(self, query: str, params: Sequence[Any] | None = None) -> list[Any]:
        """Run one statement in its own transaction; rows if it returns any."""
        with self.connect() as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    # -- config -----------------------------------------------------------
    def rewrite(self, mutate: Callable[[dict[str, Any]], None]) -> Config:
        """Change the config file (e.g. fix a transform) and reload it."""
        data = yaml.safe_load(self.config_path.read_text())
        mutate(data)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.config = config_mod.load(self.config_path)
        return self.config

    def view_topics(self) -> list[str]:
        return sorted(self.config.view_topics())

    # -- connector --------------------------------------------------------
    def apply_connector(self) -> None:
        """Create the topics, register the connector, wait until it runs."""
        cfg = self.config
        admin = kafkaclient.admin(cfg.kafka)
        heartbeat = cfg.source.topic(cfg.source.heartbeat_table)
        ensure_topics(
            admin,
            [(t, cfg.kafka.partitions, True) for t in [*self.view_topics(), heartbeat]],
        )
        self.least_privilege()
        debezium.apply(self.config)
        self._connector = True
        debezium.wait_running(self.config, timeout_s=120)

    def make_roles(
        self, prefix: str, capture_password: str | None = None
    ) -> tuple[dict[str, str], Path]:
        """The roles of ``readside connector roles --prefix prefix``, each
        with a password of its own (random, or ``capture_password`` for the
        capture role). Returns each role's DSN by kind (``capture``,
        ``reader``, ``watermark``) and a properties file of the capture
        role's login for Kafka Connect's file provider (:func:`capture_refs`)."""
        names = role_names(prefix)
        self.sql(roles_sql(self.config, prefix))
        self._made_roles.extend(names.values())
        passwords = {kind: secrets.token_urlsafe(12) for kind in names}
        passwords["capture"] = capture_password or passwords["capture"]
        for kind, role in names.items():
            self.sql(f"ALTER ROLE \"{role}\" PASSWORD '{passwords[kind]}'")
        capture = self.tmp_path / f"{prefix}-capture.properties"
        capture.write_text(
            f"user={names['capture']}\npassword={passwords['capture']}\n"
        )
        dsns = {k: _as_role(self.dsn, names[k], passwords[k]) for k in names}
        return dsns, capture

    def least_privilege(self) -> None:
        """Run the pipeline on the roles of ``readside connector roles``
        (issue 11): Debezium as the capture role, the workers' re-reads,
        snapshots and verify as the reader, the watermark as a role that
        reads no table. Only ``connector apply``'s set-up and the test's own
        SQL stay with the tables' owner. A test that configured its own
        roles keeps them."""
        data = yaml.safe_load(self.config_path.read_text())
        connect, source = data.get("connect") or {}, data["source"]
        own = (  # the test chose its own roles (its source.dsn too)
            connect.get("user_ref")
            or connect.get("password_ref")
            or source.get("lookup_dsn")
            or source.get("dsn") != self.dsn
        )
        if self._least or own:
            return
        prepare_source(self.config)  # the owner's part: the tables exist
        prefix = f"rs_{self.suffix}"
        names = role_names(prefix)
        dsns, capture = self.make_roles(prefix)
        self._least = True
        # Tables a test creates later (schema changes) are readable too.
        self.sql(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES "
            f'TO "{names["capture"]}", "{names["reader"]}"'
        )

        def least(d: dict[str, Any]) -> None:
            d.setdefault("connect", {}).update(capture_refs(capture))
            d["source"]["lookup_dsn"] = dsns["reader"]
            d.setdefault("api", {}).setdefault(  # a test's own stays
                "watermark_dsn", dsns["watermark"]
            )

        self.rewrite(least)

    # -- workers ----------------------------------------------------------
    def start_worker(
        self,
        env: Mapping[str, str] | None = None,
        views: Sequence[str] | None = None,
        metrics_port: int = 0,
        sinks: Sequence[str] | None = None,
    ) -> WorkerProc:
        n = len(self.workers)
        log = self.tmp_path / f"worker-{n}.log"
        cmd = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--config",
            str(self.config_path),
            "worker",
            "--metrics-port",
            str(metrics_port),
        ]
        if views:
            cmd += ["--views", ",".join(views)]
        if sinks:
            cmd += ["--sinks", ",".join(sinks)]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        full_env.pop("READSIDE_FAULT_CRASH_BEFORE_COMMIT", None)
        full_env.update(env or {})
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=full_env,
            )
        worker = WorkerProc(proc, log)
        self.workers.append(worker)
        return worker

    def start_in_process(self, sinks: Mapping[str, Sink] | None = None) -> Worker:
        """A worker of every view in a thread of the test; ``sinks`` replace
        the config's sinks of the same names (to wrap one)."""
        views = build_views(self.config)
        names = sorted({s for v in views.values() for s in v.cfg.sinks})
        built: dict[str, Sink] = {**build_sinks(self.config, names), **(sinks or {})}
        worker = Worker(self.config, views, built)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self.workers.append(ThreadWorker(worker, thread))
        return worker

    def second_member(self, worker: Worker) -> Consumer:
        """A bare consumer in the group of in-process ``worker`` (it commits
        nothing), once the rebalance gave it part of the worker's partitions.
        Poll it to keep it in the group; close it to give them back."""
        total = len(worker.consumer.assignment())
        conf = consumer_config(self.config, worker.scope())
        conf.pop("logger")
        other = Consumer(conf)
        heartbeat = self.config.source.topic(self.config.source.heartbeat_table)
        other.subscribe([*worker.topics(), heartbeat])

        def split() -> bool:
            other.poll(0.2)
            return bool(other.assignment()) and 0 < worker.health.assigned < total

        wait_for(split, 60, "the second member to take part of the partitions")
        return other

    def wait_own_applied(
        self, worker: Worker, other: Consumer, timeout: float = 60
    ) -> None:
        """Wait until the group committed every partition ``worker`` holds up
        to its end, polling the second member ``other`` meanwhile."""
        mine = {(tp.topic, tp.partition) for tp in worker.consumer.assignment()}

        def mine_applied() -> bool:
            other.poll(0.2)
            ends = self.high_watermarks()
            done = self.committed()
            return all(done[k] >= ends[k] for k in ends if k in mine)

        wait_for(mine_applied, timeout, "the worker to apply its own partitions")

    def wait_log(self, worker: WorkerProc, text: str, timeout: float = 60) -> None:
        """Wait until ``text`` appears in the worker's log (or fail with its tail)."""

        def seen() -> bool:
            if text in worker.log_text():
                return True
            if not worker.alive():
                raise AssertionError(f"worker exited before {text!r}:\n{worker.tail()}")
            return False

        wait_for(seen, timeout, f"{text!r} in {worker.log}")

    # -- progress ---------------------------------------------------------
    def _consumer(self) -> Consumer:
        return kafkaclient.consumer(
            self.config.kafka,
            {"group.id": self.config.kafka.group_id, "enable.auto.commit": False},
        )

    def set_topic_configs(self, topic: str, settings: Mapping[str, str]) -> None:
        """Set ``settings`` on ``topic`` (incrementally: the rest stay)."""
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in settings.items()
        ]
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        admin = kafkaclient.admin(self.config.kafka)
        for fut in admin.incremental_alter_configs([res]).values():
            fut.result(30)

    def partitions(self) -> list[TopicPartition]:
        n = self.config.kafka.partitions
        return [TopicPartition(t, p) for t in self.view_topics() for p in range(n)]

    def high_watermarks(self) -> dict[tuple[str, int], int]:
        consumer = self._consumer()
        try:
            return {
                (tp.topic, tp.partition): consumer.get_watermark_offsets(
                    tp, timeout=10
                )[1]
                for tp in self.partitions()
            }
        finally:
            consumer.close()

    def committed(self) -> dict[tuple[str, int], int]:
        """Per partition, how far every view reading it is applied: the least
        over those views of the offset committed by the groups applying the
        view (:mod:`pipeline.groups`; 0 where nothing is committed)."""
        parts = [(tp.topic, tp.partition) for tp in self.partitions()]
        if self._applied is None or self._applied.cfg is not self.config:
            self._applied = AppliedOffsets(self.config)
        by_view = self._applied.by_view(parts)
        readers = self.config.view_topics()
        return {
            (t, p): min(by_view[v].get((t, p), 0) for v in readers[t]) for t, p in parts
        }

    def connector_caught_up(self, lsn: str) -> bool:
        rows = self.sql(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (lsn, self.config.source.slot),
        )
        return bool(rows and rows[0][0])

    def _streaming(self) -> bool:
        try:
            return debezium.streaming(self.config)
        except TransientError:
            return False

    def wait_streaming(self, timeout: float = 120.0) -> None:
        """Wait until the connector finished its initial snapshot and streams."""
        wait_for(
            self._streaming,
            timeout,
            "the connector to finish its initial snapshot and stream",
        )

    def wait_drained(self, timeout: float = 120.0) -> None:
        """Wait until every change made so far is applied and committed.

        The connector has caught up when the slot confirmed an LSN taken after
        the last write (Connect flushes records before it commits offsets);
        then the group's committed offsets must reach the topics' ends.
        """
        deadline = time.monotonic() + timeout
        lsn = self.sql("SELECT pg_current_wal_lsn()::text")[0][0]
        # A new connector's slot confirms the LSN before its initial
        # snapshot is in the topics: their ends count only once it streams.
        if self._connector:
            self.wait_streaming(timeout)
        wait_for(
            lambda: self.connector_caught_up(lsn),
            timeout,
            f"connector to confirm LSN {lsn}",
        )
        ends = self.high_watermarks()
        progress: dict[str, Any] = {}

        def done() -> bool:
            if not any(w.alive() for w in self.workers):
                tails = "\n---\n".join(w.tail() for w in self.workers)
                raise AssertionError(f"no worker is running:\n{tails}")
            have = self.committed()
            behind = {k: (have[k], end) for k, end in ends.items() if have[k] < end}
            progress["behind"] = behind
            return not behind

        try:
            wait_for(
                done,
                max(1.0, deadline - time.monotonic()),
                "committed offsets to reach the topics' ends",
                interval=0.3,
            )
        except AssertionError as exc:
            for w in self.workers:  # stacks of stuck workers into their logs
                w.dump_stacks()
            time.sleep(1)
            tails = "\n---\n".join(w.tail(60) for w in self.workers)
            raise AssertionError(
                f"{exc}; (committed, end): {progress.get('behind')}"
                f"\nworker logs:\n{tails}"
            ) from None

    def dead_letters(self) -> list[DeadRecord]:
        """Every record in the pipeline's dead-letter topic."""
        cfg = self.config.kafka
        return [rec for rec, _c in read_all(cfg, cfg.dlq_topic)]

    def verify(self) -> list[Drift]:
        return verify(self.config)

    def assert_converged(self) -> None:
        bad = [d for d in self.verify() if not d.ok]
        assert not bad, "drift:\n" + "\n".join(d.describe() for d in bad)

    # -- teardown ---------------------------------------------------------
    def close(self, drop_stores: bool = True) -> None:
        for w in self.workers:
            if w.alive():
                w.kill()
        cfg = self.config
        if self._connector:
            try:
                debezium.delete(cfg)
            finally:
                wait_for(lambda: not self._slot_active(), 60, "slot to become inactive")
                debezium.drop_slot(cfg)
        if drop_stores:
            from pipeline.worker import build_sinks

            for name, sink in build_sinks(cfg, list(cfg.sinks)).items():
                for view, vcfg in cfg.effective_views().items():
                    if name in vcfg.sinks:
                        sink.drop(view)  # type: ignore[attr-defined]
                sink.close()
            mongo = cfg.sinks["mongodb"]
            with pymongo.MongoClient(mongo.uri.get_secret_value()) as client:  # type: ignore[union-attr]
                client.drop_database(mongo.database)  # type: ignore[union-attr]
            self._delete_topics()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            for role in self._made_roles:
                try:  # its grants went with the database
                    conn.execute(f'DROP ROLE IF EXISTS "{role}"')
                except psycopg.Error as exc:
                    print(f"role {role} not dropped: {exc}", file=sys.stderr)

    def _delete_topics(self) -> None:
        """Delete the pipeline's topics (its connector is gone, so nothing
        makes them again). A run of the suite makes thousands of partitions;
        left on the broker, they slow every later start of it (a test
        restarts it) and what the broker does for each of them meanwhile."""
        prefix = self.config.source.topic_prefix
        try:
            admin = kafkaclient.admin(self._made_kafka)
            names = [
                t
                for t in admin.list_topics(timeout=10).topics
                if t.startswith(f"{prefix}.")
                or t == f"{HEARTBEAT_TOPIC_PREFIX}{prefix}"
            ]
            if names:
                for fut in admin.delete_topics(names, operation_timeout=30).values():
                    fut.result()
        except (KafkaException, FatalError, TransientError) as exc:  # broker away
            print(f"topics of {prefix} not deleted: {exc}", file=sys.stderr)

    def _slot_active(self) -> bool:
        rows = self.sql(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
            (self.config.source.slot,),
        )
        return bool(rows and rows[0][0])


def create_pipeline(
    tmp_path: Path,
    schema_sql: str,
    tables: Sequence[str],
    views: Mapping[str, Any],
    worker: Mapping[str, Any] | None = None,
) -> Pipeline:
    """Create the database and schema and write the config (connector not yet)."""
    suffix = uuid.uuid4().hex[:10]
    dbname = f"rs_it_{suffix}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{dbname}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_sql)  # type: ignore[arg-type]
    data = build_config(suffix, dsn, tables, views, worker)
    path = tmp_path / "readside.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Pipeline(suffix, dbname, dsn, path, config_mod.load(path), tmp_path)


# -- load ---------------------------------------------------------------------

Step = Callable[[psycopg.Connection[Any], random.Random], None]


class BackgroundLoad:
    """Runs ``step`` repeatedly on its own connection until stopped."""

    def __init__(self, dsn: str, step: Step, seed: int, pause_s: float = 0.005) -> None:
        self.dsn, self.step, self.pause_s = dsn, step, pause_s
        self.rng = random.Random(seed)
        self.ops = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    self.step(conn, self.rng)
                    self.ops += 1
                    if self.pause_s:
                        time.sleep(self.pause_s)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def wait_ops(self, n: int, timeout: float = 60) -> None:
        """Wait until at least ``n`` more steps ran."""
        target = self.ops + n
        wait_for(lambda: self.ops >= target or self.error, timeout, f"{n} load steps")
        if self.error:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"load failed: {self.error!r}") from self.error
