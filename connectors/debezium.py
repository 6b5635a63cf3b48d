"""The Debezium PostgreSQL connector, configured from the readside config.

``readside connector apply`` prepares the source database
(:func:`connectors.postgres.prepare_source`: helper tables, publication,
truncate triggers), builds the connector's settings from the config
(:func:`connector_config`) and registers or updates the connector over the
Kafka Connect REST API (:class:`ConnectClient`). Here too: deleting it and
its replication slot, its status and whether it streams. The decoder
(``pipeline.source``) relies on the type handling chosen here; why the
publication publishes through partition roots is in
:mod:`connectors.postgres`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from psycopg.conninfo import conninfo_to_dict

from connectors.postgres import (
    captured_tables,
    heartbeat_sql,
    prepare_source,
    publication_problems,
    read_generated_columns,
    reloads,
)
from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.errors import FatalError, TransientError
from pipeline.source.converter import record_format
from pipeline.sourceconfig import MAX_MESSAGE_BYTES_LIMIT, ConnectConfig

logger = logging.getLogger(__name__)

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
#: how long the transaction topic keeps its BEGIN and END events
TRANSACTION_RETENTION_MS = 24 * 3600 * 1000


def connector_config(cfg: Config, generated: Sequence[str] = ()) -> dict[str, str]:
    """The connector settings as the Connect REST API takes them;
    ``generated``: the captured tables' generated columns
    (:func:`~connectors.postgres.generated_columns`), left out of the records."""
    src = cfg.source
    conn = conninfo_to_dict(src.dsn.get_secret_value())
    tables = captured_tables(cfg)
    settings: dict[str, Any] = {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": 1,
        "plugin.name": "pgoutput",
        "database.hostname": conn.get("host", "127.0.0.1"),
        "database.port": conn.get("port", 5432),
        "database.user": cfg.connect.user_ref or conn.get("user", "postgres"),
        "database.password": cfg.connect.password_ref or conn.get("password", ""),
        "database.dbname": conn.get("dbname", "postgres"),
        "topic.prefix": src.topic_prefix,
        "slot.name": src.slot,
        "publication.name": src.publication,
        # readside creates and updates the publication (ensure_publication);
        # the option below is read only by the other modes, kept in step.
        "publication.autocreate.mode": "disabled",
        "publish.via.partition.root": "true",
        "table.include.list": ",".join(tables),
        "snapshot.mode": src.snapshot_mode,
        # Heartbeats keep time lag fresh and let an idle database release WAL.
        "heartbeat.interval.ms": src.heartbeat_ms,
        "heartbeat.action.query": heartbeat_sql(src.heartbeat_table),
        # Incremental snapshots (readside snapshot on a table view).
        "signal.enabled.channels": "source",
        "signal.data.collection": src.signal_table,
        "incremental.snapshot.chunk.size": 2048,
        # Deletes are followed by a tombstone so compaction can drop the key.
        "tombstones.on.delete": "true",
        # Truncates stay skipped (Debezium's default, spelled out): a truncate
        # event has no key, and the broker refuses keyless records in the
        # compacted table topics ("Compacted topic cannot accept message
        # without key"), which fails the task. A trigger turns a TRUNCATE
        # into row deletes instead (connectors/truncate.py).
        "skipped.operations": "t",
        # Type handling the decoder relies on (docs/types.md).
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "interval.handling.mode": "string",
        "binary.handling.mode": "base64",
        "hstore.handling.mode": "json",
        "include.unknown.datatypes": "true",
        # Column type names in the schema let the decoder normalise numerics
        # (Java prints 1E-8 and NAN where PostgreSQL prints 0.00000001, NaN).
        "column.propagate.source.type": ".*",
        # A record at the end of each transaction (its END event, in the
        # topic `<topic.prefix>.transaction`) carries the offset with that
        # transaction's commit LSN, so Connect's next offset flush confirms
        # the commit to the slot. Without it the offset moves only with the
        # next change or heartbeat, and a read with min_lsn after a lone
        # write waits for that too (docs/design.md, the watermark).
        "provide.transaction.metadata": "true",
        # JsonConverter or Apicurio's AvroConverter (kafka.format).
        **record_format(cfg.kafka, cfg.connect),
        # Topics: one per table, compacted, partitioned by primary key.
        "topic.creation.default.replication.factor": cfg.kafka.replication_factor,
        "topic.creation.default.partitions": cfg.kafka.partitions,
        "topic.creation.default.cleanup.policy": "compact",
        # A delete record is kept as long as its tombstone (kafka.delete_window_ms):
        # within that window a worker behind sees both, so the former owner of
        # an aggregate child (in the record's before image) is still known.
        "topic.creation.default.min.compaction.lag.ms": cfg.kafka.delete_window_ms,
        "topic.creation.default.delete.retention.ms": cfg.kafka.delete_window_ms,
        # A change as large as kafka.max_message_bytes passes the producer
        # and the topic (Kafka's 1 MiB failed the task at a megabyte row,
        # stopping every table's capture); connector apply raises the limit
        # of a table topic made before (raise_topic_limits).
        "topic.creation.default.max.message.bytes": cfg.kafka.max_message_bytes,
        "producer.override.max.request.size": cfg.kafka.max_message_bytes,
        # The transaction topic: one BEGIN and one END per transaction, keyed
        # by transaction id (compaction would keep every END): kept a day.
        "topic.creation.groups": "transactions",
        "topic.creation.transactions.include": re.escape(src.transaction_topic),
        "topic.creation.transactions.partitions": 1,
        "topic.creation.transactions.cleanup.policy": "delete",
        "topic.creation.transactions.retention.ms": TRANSACTION_RETENTION_MS,
        "max.batch.size": 4096,
        "max.queue.size": 16384,
        # Debezium's poll waits for a full batch or this long: the most a
        # change waits in Connect under a light load.
        "poll.interval.ms": 10,
    }
    if generated:
        # pgoutput streams no generated column, and Debezium's incremental
        # snapshot fails on a table that has one (skipping the table with a
        # warning in Connect's log): left out of every record, they are read
        # from the source row by the workers (pipeline/toast.py).
        settings["column.exclude.list"] = ",".join(re.escape(c) for c in generated)
    # TLS to PostgreSQL, as the DSN says it (Debezium's names for libpq's).
    for option in ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"):
        if conn.get(option):
            settings[f"database.{option}"] = conn[option]
    return {k: str(v) for k, v in settings.items()}


#: settings whose values a report names, never shows
_SECRET = re.compile(r"password|secret|user\.info|jaas|ssl\.?key", re.IGNORECASE)
#: the longest value a report shows
_SHOWN = 60


def config_problems(
    cfg: Config, live: dict[str, str] | None, generated: Sequence[str] = ()
) -> list[str]:
    """How the connector's config as Connect holds it (``live``; None: no
    connector) differs from what ``readside connector apply`` sets
    (``generated``: the captured tables' generated columns now).

    A setting changed by hand (through Connect's REST API or a UI) can leave
    changes out of the topics (``table.include.list``, ``skipped.operations``),
    or change what the records say (a column list, a transform, a type
    handling mode), while the connector runs on without an error.
    """
    if live is None:
        return []
    want = connector_config(cfg, generated)
    diffs = [
        f"{k} {_shown(k, live[k])} (readside sets {_shown(k, v)})"
        if k in live
        else f"{k} removed (readside sets {_shown(k, v)})"
        for k, v in sorted(want.items())
        if live.get(k) != v
    ]
    diffs += [
        f"{k} added ({_shown(k, v)})"
        for k, v in sorted(live.items())
        if k not in want and k != "name"
    ]
    if not diffs:
        return []
    return [
        f"connector {cfg.connect.connector} is not as readside set it: "
        f"{'; '.join(diffs)}: changes may be left out of the topics or "
        "changed in them; set it again (readside connector apply), then load "
        "again what changed meanwhile ("
        + "; ".join(reloads(cfg, captured_tables(cfg)))
        + ")"
    ]


def _shown(key: str, value: str) -> str:
    if _SECRET.search(key):
        return "(hidden)"
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def secret_risks(cfg: Config) -> list[str]:
    """What the connector config would hold in clear text (shown by
    Connect's REST API to whoever can reach it)."""
    conn = conninfo_to_dict(cfg.source.dsn.get_secret_value())
    if conn.get("password") and cfg.connect.password_ref is None:
        return [
            "source.dsn holds a password and connect.password_ref is not set: "
            "the connector config carries the password in clear text and "
            "Kafka Connect's REST API shows it; name it through a Connect "
            "config provider instead (docs/configuration.md#connect)"
        ]
    return []


@dataclass
class ConnectClient:
    """A small client of the Kafka Connect REST API (``auth``: its basic
    authentication's user and password)."""

    url: str
    timeout_s: float = 15.0
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, connect: ConnectConfig) -> ConnectClient:
        """The client of the ``connect`` section: its URL and login."""
        auth = None
        if connect.username is not None and connect.password is not None:
            auth = (connect.username, connect.password.get_secret_value())
        return cls(connect.url, auth=auth)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def request(self, method: str, path: str, body: Any = None) -> Any:
        if not self.url.startswith(("http://", "https://")):
            raise FatalError(f"connect.url must be http(s): {self.url!r}")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (scheme checked above)
            self.url.rstrip("/") + path,
            data=data,
            method=method,
            headers=self._headers(),
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if exc.code == 404:
                return None
            if exc.code in (401, 403):
                who = "no login" if self.auth is None else f"user {self.auth[0]!r}"
                raise FatalError(
                    f"Connect at {self.url} refused {method} {path} ({exc.code}, "
                    f"{who}): set connect.username and connect.password"
                ) from exc
            if exc.code in (409, 500, 503):
                raise TransientError(
                    f"Connect {method} {path}: {exc.code} {detail}"
                ) from exc
            raise FatalError(f"Connect {method} {path}: {exc.code} {detail}") from exc
        except OSError as exc:
            raise TransientError(f"Connect at {self.url} unreachable: {exc}") from exc
        return json.loads(raw) if raw else None


def apply(cfg: Config) -> dict[str, Any]:
    """Create or update the connector; returns Connect's answer."""
    prepare_source(cfg)
    raise_topic_limits(cfg)
    client = ConnectClient.of(cfg.connect)
    settings = connector_config(cfg, read_generated_columns(cfg))
    path = f"/connectors/{cfg.connect.connector}"
    before = client.request("GET", f"{path}/status") or {}
    result = client.request("PUT", f"{path}/config", settings)
    if _failed(before):
        _restart_failed(client, path)
    logger.info(
        "connector applied name=%s tables=%d",
        cfg.connect.connector,
        len(cfg.source.tables),
    )
    return dict(result or {})


def raise_topic_limits(cfg: Config) -> list[str]:
    """Raise ``max.message.bytes`` of each table topic that exists to
    ``kafka.max_message_bytes`` where it is lower; returns the topics raised.

    The connector creates a topic with the limit (``topic.creation``); one
    made before (by an older readside, by hand) keeps Kafka's 1 MiB, and a
    larger change fails the connector's task, stopping every table's
    capture, until it is raised. A topic whose limit is higher keeps it.

    Raises:
        FatalError: the broker refused the change (e.g. no ALTER_CONFIGS
            permission); the message says what to set.
        TransientError: Kafka did not answer.
    """
    want = cfg.kafka.max_message_bytes
    admin = kafkaclient.admin(cfg.kafka)
    topics = [cfg.source.topic(t) for t in cfg.source.tables]
    try:
        existing = set(admin.list_topics(timeout=10).topics)
        limits = kafkaclient.topic_configs(admin, [t for t in topics if t in existing])
    except KafkaException as exc:
        raise TransientError(
            f"Kafka did not answer ({exc.args[0]}): connector apply reads the "
            "table topics' max.message.bytes, to raise it to "
            f"kafka.max_message_bytes ({want})"
        ) from exc
    low = sorted(t for t, c in limits.items() if int(c["max.message.bytes"]) < want)
    for topic in low:
        try:
            kafkaclient.alter_topic(admin, topic, {"max.message.bytes": str(want)})
        except KafkaException as exc:
            raise FatalError(
                f"table topic {topic} takes changes up to "
                f"{limits[topic]['max.message.bytes']} bytes, below "
                f"kafka.max_message_bytes ({want}); raising it failed "
                f"({exc.args[0]}). Set it with: kafka-configs --alter "
                f"--entity-type topics --entity-name {topic} "
                f"--add-config max.message.bytes={want}"
            ) from exc
        logger.info(
            "table topic limit raised topic=%s max.message.bytes=%s->%d",
            topic,
            limits[topic]["max.message.bytes"],
            want,
        )
    return low


def _failed(status: dict[str, Any]) -> bool:
    return any(t.get("state") == "FAILED" for t in status.get("tasks", []))


def restart_failed_tasks(client: ConnectClient, path: str) -> None:
    """Ask Connect once to restart the failed tasks of the connector at
    ``path`` (``/connectors/NAME``); the running ones are left alone.

    Raises:
        TransientError: Connect did not take it (rebalancing, down).
    """
    client.request("POST", f"{path}/restart?includeTasks=true&onlyFailed=true")


def _restart_failed(
    client: ConnectClient, path: str, within_s: float = 20.0, every_s: float = 3.0
) -> None:
    """Restart the connector's failed tasks on its new config: a task that
    failed stays failed until restarted, whatever the config now says (the
    setting that was its way out, say). Connect restarts them while it
    takes the new config in, so the restart is asked again, every
    ``every_s``, while the status still shows one failed, for up to
    ``within_s``; a task that fails on the new config too is then
    :func:`wait_running`'s to report."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            restart_failed_tasks(client, path)
        except TransientError as exc:  # rebalancing: asked again below
            logger.info("failed task not restarted yet error=%s", exc)
        time.sleep(every_s)
        try:
            if not _failed(client.request("GET", f"{path}/status") or {}):
                return
        except TransientError:
            pass
        if time.monotonic() > deadline:
            return


def delete(cfg: Config) -> bool:
    client = ConnectClient.of(cfg.connect)
    found = client.request("GET", f"/connectors/{cfg.connect.connector}")
    if found is None:
        return False
    client.request("DELETE", f"/connectors/{cfg.connect.connector}")
    return True


def drop_slot(cfg: Config, timeout_s: float = 30.0) -> bool:
    """Drop the replication slot and publication (after ``delete``).

    The connector's task releases the slot asynchronously, so this waits up
    to ``timeout_s`` for it to become inactive. Returns whether it is gone.
    """
    src = cfg.source
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(src.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"DROP PUBLICATION IF EXISTS {src.publication}")
        while True:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (src.slot,),
            ).fetchone()
            if row is None:
                return True
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (src.slot,))
                return True
            if time.monotonic() > deadline:
                logger.warning("slot still active, not dropped slot=%s", src.slot)
                return False
            time.sleep(0.5)


@dataclass(frozen=True)
class SlotState:
    """The replication slot as PostgreSQL keeps it."""

    name: str
    #: a connector streams from it now
    active: bool
    #: WAL written since the position the connector confirmed (its lag)
    unconfirmed_bytes: int | None
    #: WAL PostgreSQL keeps on disk for the slot (from its ``restart_lsn``)
    retained_bytes: int | None
    #: ``reserved``/``extended``: its WAL is kept; ``unreserved``: past
    #: ``max_slot_wal_keep_size``, to be removed at the next checkpoint;
    #: ``lost``: removed, the slot can never be read again
    wal_status: str | None

    def warnings(self) -> list[str]:
        """What an operator must act on, worst first."""
        out = []
        if self.wal_status == "lost":
            out.append(
                f"replication slot {self.name} lost WAL it needed (wal_status "
                "lost, max_slot_wal_keep_size): the connector cannot resume "
                "and the changes in between are gone; drop the slot "
                f"(readside connector delete --drop-slot), then {_READ_AGAIN}"
            )
        elif self.wal_status == "unreserved":
            out.append(
                f"replication slot {self.name} is past max_slot_wal_keep_size "
                "(wal_status unreserved): PostgreSQL removes WAL it has not "
                "delivered at the next checkpoint unless the connector catches up"
            )
        if not self.active:
            out.append(
                f"replication slot {self.name} is inactive: no connector reads "
                f"it, and PostgreSQL keeps {_size(self.retained_bytes)} of WAL "
                "for it until one does (readside connector status) or the slot "
                "is dropped (readside connector delete --drop-slot)"
            )
        return out


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def slot_state(cfg: Config, conn: psycopg.Connection[Any]) -> SlotState | None:
    """The connector's replication slot, or None while it has none."""
    row = conn.execute(
        "SELECT active, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
        "wal_status FROM pg_replication_slots WHERE slot_name = %s",
        (cfg.source.slot,),
    ).fetchone()
    if row is None:
        return None
    active, unconfirmed, retained, wal_status = row
    return SlotState(
        cfg.source.slot,
        bool(active),
        None if unconfirmed is None else int(unconfirmed),
        None if retained is None else int(retained),
        wal_status,
    )


def status(cfg: Config) -> dict[str, Any]:
    client = ConnectClient.of(cfg.connect)
    st = client.request("GET", f"/connectors/{cfg.connect.connector}/status")
    out: dict[str, Any] = {"connector": cfg.connect.connector}
    drift: list[str] = []
    if st is None:
        out["state"] = "ABSENT"
        out["tasks"] = []
    else:
        out["state"] = st["connector"]["state"]
        out["tasks"] = [
            {
                "id": t["id"],
                "state": t["state"],
                "trace": t.get("trace", "")[:300],
                # said far into the trace, past the offsets it prints
                "position_gone": t["state"] == "FAILED"
                and POSITION_GONE in t.get("trace", ""),
                "on_registry": t["state"] == "FAILED"
                and REGISTRY_CLIENT in t.get("trace", ""),
                "on_source": bool(failed_on_source({"tasks": [t]})),
            }
            for t in st.get("tasks", [])
        ]
        try:
            drift = connector_problems(cfg, client)
        except (TransientError, FatalError) as exc:
            drift = [f"connector {cfg.connect.connector}'s config not read: {exc}"]
        drift += failed_task_problems(cfg, st)
    out.update(slot_report(cfg))
    out["capture_warnings"] = drift + out["capture_warnings"]
    return out


#: what a Debezium task that failed says when the WAL position it keeps in
#: Connect's offsets is gone from its replication slot
POSITION_GONE = "no longer available on the server"
#: what names the schema registry's client in the trace of a task it failed
#: (Apicurio's converter, ``kafka.format: avro``)
REGISTRY_CLIENT = "io.apicurio.registry."


def failed_on_registry(status: dict[str, Any]) -> list[int]:
    """The ids of the tasks, in Connect's status of a connector, that the
    schema registry's client failed (the registry did not answer when a new
    schema had to be registered: :mod:`pipeline.taskheal`)."""
    return [
        int(t["id"])
        for t in status.get("tasks", [])
        if t.get("state") == "FAILED" and REGISTRY_CLIENT in str(t.get("trace", ""))
    ]


#: what the way out of a lost position is, said by both warnings
_READ_AGAIN = (
    "set source.snapshot_mode: when_needed and run readside connector apply: "
    "Debezium reads every table whole again, and the workers then name the "
    "load of each view (readside snapshot VIEW --from-source, which also "
    "removes the rows deleted meanwhile: no record says so)"
)


#: what names a connection to the source that failed, was cut or found no
#: slot, in the trace of a task: PostgreSQL's JDBC driver's messages and
#: the server's (starting up, shutting down, out of connections)
SOURCE_DOWN = (
    "The connection attempt failed",
    "Connection to ",  # "... refused. Check that the hostname and port ..."
    "Connection refused",
    "An I/O error occurred while sending to the backend",
    "This connection has been closed",
    "the database system is",  # starting up, shutting down, in recovery mode
    "terminating connection due to administrator command",
    "too many connections",  # for a role, for a database
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)


def failed_on_source(status: dict[str, Any]) -> list[int]:
    """The ids of the tasks, in Connect's status of a connector, that failed
    because the source database did not answer (:mod:`pipeline.taskheal`);
    not those a lost position failed (a restart cannot mend that)."""
    out = []
    for t in status.get("tasks", []):
        trace = str(t.get("trace", ""))
        if (
            t.get("state") == "FAILED"
            and "org.postgresql.util.PSQLException" in trace
            and any(s in trace for s in SOURCE_DOWN)
            and POSITION_GONE not in trace
        ):
            out.append(int(t["id"]))
    return out


#: what a task that failed on a change larger than the topic takes says
#: (the producer's own check, or the broker's refusal)
TOO_LARGE = "RecordTooLargeException"
_TOO_LARGE_SIZE = re.compile(r"The message is (\d+) bytes")


def failed_task_problems(cfg: Config, status: dict[str, Any]) -> list[str]:
    """The warnings of the connector's failed tasks, in Connect's ``status``
    of it, whose cause readside knows and can name the way out of: a lost
    position (:func:`position_gone`), a change too large (:func:`too_large`)."""
    out = []
    for t in status.get("tasks", []):
        if t.get("state") != "FAILED":
            continue
        trace = str(t.get("trace", ""))
        if POSITION_GONE in trace:
            out.append(position_gone(int(t["id"])))
        elif TOO_LARGE in trace:
            out.append(too_large(cfg, int(t["id"]), trace))
    return out


def task_problems(cfg: Config, client: ConnectClient) -> list[str]:
    """:func:`failed_task_problems` of the connector Connect runs now.

    Raises:
        TransientError: Connect does not answer.
    """
    st = client.request("GET", f"/connectors/{cfg.connect.connector}/status")
    return [] if st is None else failed_task_problems(cfg, st)


def too_large(cfg: Config, task: int, trace: str) -> str:
    """The warning of a task that failed on a change larger than the table
    topics take: it fails on that change again at every restart."""
    size = _TOO_LARGE_SIZE.search(trace)
    change = f"a change of {size.group(1)} bytes" if size else "a change"
    return (
        f"connector task {task} failed on {change}, larger than the table "
        f"topics take (kafka.max_message_bytes {cfg.kafka.max_message_bytes}): "
        "no change of any table reaches the topics until it passes (the "
        "replication slot keeps them); raise kafka.max_message_bytes (at most "
        f"{MAX_MESSAGE_BYTES_LIMIT}) and run readside connector apply, which "
        "raises the topics' limit and restarts the task at that change"
    )


def position_gone(task: int) -> str:
    """The warning of a task that failed because its position is gone."""
    return (
        f"connector task {task} cannot resume: the position in the WAL it "
        "keeps is gone from its replication slot (the slot dropped or made "
        "again, a failover, max_slot_wal_keep_size), so the changes after it "
        f"never reached the topics; {_READ_AGAIN}"
    )


def connector_problems(
    cfg: Config,
    client: ConnectClient | None = None,
    generated: Sequence[str] | None = None,
) -> list[str]:
    """:func:`config_problems` of the connector Connect runs now
    (``generated``: read from the source when not given).

    Raises:
        TransientError: Connect does not answer, or the source cannot be read.
    """
    client = client or ConnectClient.of(cfg.connect)
    live = client.request("GET", f"/connectors/{cfg.connect.connector}/config")
    if live is None:
        return []
    if generated is None:
        generated = read_generated_columns(cfg)
    return config_problems(cfg, live, generated)


def slot_report(cfg: Config) -> dict[str, Any]:
    """The slot's state for a status report: ``slot_lag_bytes`` (what the
    connector has not confirmed), ``slot`` (:class:`SlotState`, None
    without a slot) and ``capture_warnings`` (the slot's and the
    publication's); ``slot_error`` when PostgreSQL could not be asked."""
    try:
        with psycopg.connect(
            cfg.source.dsn.get_secret_value(), connect_timeout=5
        ) as conn:
            slot = slot_state(cfg, conn)
            unpublished = publication_problems(conn, cfg, captured_tables(cfg))
    except psycopg.Error as exc:
        return {
            "slot_lag_bytes": None,
            "slot": None,
            "capture_warnings": [],
            "slot_error": exc.__class__.__name__,
        }
    return {
        "slot_lag_bytes": None if slot is None else slot.unconfirmed_bytes,
        "slot": None if slot is None else asdict(slot),
        "capture_warnings": unpublished + ([] if slot is None else slot.warnings()),
    }


def streaming(cfg: Config) -> bool:
    """Whether the connector has finished its initial snapshot and streams.

    Read from the source offset Connect committed for it: Debezium writes a
    ``snapshot`` key there while it snapshots and a streaming position
    (``lsn_proc``) once it streams. Before any offset is committed (the
    first seconds of a connector) this is False: whether a snapshot is
    still coming is not known yet.
    """
    client = ConnectClient.of(cfg.connect)
    found = client.request("GET", f"/connectors/{cfg.connect.connector}/offsets")
    offsets = [o.get("offset") or {} for o in (found or {}).get("offsets", [])]
    return bool(offsets) and all(
        o and not o.get("snapshot") and "last_snapshot_record" not in o for o in offsets
    )


def wait_running(cfg: Config, timeout_s: float = 120.0) -> dict[str, Any]:
    """Block until the connector and its task run; raise if a task failed."""
    deadline = time.monotonic() + timeout_s
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            st = status(cfg)
        except TransientError:
            time.sleep(1)
            continue
        tasks = st.get("tasks", [])
        failed = [t for t in tasks if t["state"] == "FAILED"]
        if failed:
            if failed[0]["position_gone"]:
                raise FatalError(position_gone(failed[0]["id"]))
            raise FatalError(f"connector task failed: {failed[0]['trace']}")
        if (
            st.get("state") == "RUNNING"
            and tasks
            and all(t["state"] == "RUNNING" for t in tasks)
        ):
            return st
        time.sleep(0.5)
    raise FatalError(f"connector not running after {timeout_s:.0f}s: {st}")
