"""The JVM services of the local stack: the Kafka broker, Kafka Connect and
the schema registry.

Kafka and Connect run from the jars ``provision`` resolved, with a log4j2
configuration of their own; Connect finds the Debezium connector and
Apicurio's Avro converter on its plugin path. The registry is Apicurio
Registry's runnable app, keeping its schemas in an H2 file.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import subprocess
import uuid
from pathlib import Path

from pipeline import kafkaclient
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack.redis_server import Redis
from pipeline.stack.services import (
    APICURIO_CONVERTER_CLASS,
    DEBEZIUM_CLASS,
    Elasticsearch,
    FerretBackend,
    FerretDB,
    Postgres,
    Service,
    http_json,
    java_binary,
    port_in_use,
)


def cluster_id() -> str:
    """A random KRaft cluster id (22 URL-safe base64 characters).

    Never one that starts with ``-``: the storage tool would read it as an
    option and fail (1 id in 64). Kafka's own ``Uuid.randomUuid`` skips
    those for the same reason.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _log4j(path: Path) -> Path:
    path.write_text(
        "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
        "logger.kafka.name = org.apache.kafka\nlogger.kafka.level = WARN\n"
        "logger.dbz.name = io.debezium\nlogger.dbz.level = INFO\n"
    )
    return path


def _kafka_jvm(svc: Service, main_class: str, properties: str) -> list[str]:
    """A JVM on the Kafka jars, logging with the service's log4j2 file."""
    base = svc.ctx.dir(svc.name)
    return [
        java_binary(),
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
        "-cp",
        f"{svc.ctx.installed.kafka_libs}/*",
        main_class,
        str(base / properties),
    ]


_QUIET = logging.getLogger("readside.stack.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


SASL_FILE = "sasl-client.json"


def sasl_client(data: Path) -> dict[str, str]:
    """The ``kafka.client`` settings of the broker's SASL listener (user and
    password from ``<data>/kafka/sasl-client.json``, written by the broker's
    first start).

    Raises:
        FileNotFoundError: the broker was never started with that listener.
    """
    user = json.loads((data / "kafka" / SASL_FILE).read_text())
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user["username"],
        "sasl.password": user["password"],
    }


def _sasl_user(base: Path) -> tuple[str, str]:
    """The SASL listener's one user, made once with a random password."""
    path = base / SASL_FILE
    if not path.exists():
        path.touch(mode=0o600)
        user = {"username": "readside", "password": secrets.token_urlsafe(18)}
        path.write_text(json.dumps(user) + "\n")
    user = json.loads(path.read_text())
    return user["username"], user["password"]


class Kafka(Service):
    """One KRaft broker and controller. Its PLAINTEXT listener serves the
    stack; a second listener, SASL_PLAINTEXT with mechanism PLAIN on
    ``stack.kafka_sasl_port``, lets tests reach the same broker as a
    secured cluster (:func:`sasl_client`)."""

    name = "kafka"

    @property
    def ports(self) -> list[int]:
        cfg = self.ctx.cfg
        return [self.port, cfg.kafka_controller_port, cfg.kafka_sasl_port]

    def prepare(self) -> None:
        base = self.ctx.dir("kafka")
        base.mkdir(parents=True, exist_ok=True)
        props = base / "server.properties"
        cport = self.ctx.cfg.kafka_controller_port
        sport = self.ctx.cfg.kafka_sasl_port
        user, password = _sasl_user(base)
        props.touch(mode=0o600)
        props.chmod(0o600)  # it holds the SASL user's password
        props.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{cport}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sport},CONTROLLER://127.0.0.1:{cport}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sport}\n"
            "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN\n"
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{user}="{password}";\n'
            f"log.dirs={base / 'logs'}\nnum.partitions=3\n"
            "offsets.topic.replication.factor=1\noffsets.topic.num.partitions=10\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=true\nlog.cleaner.backoff.ms=5000\n"
            "log.segment.bytes=67108864\n"
        )
        _log4j(base / "log4j2.properties")
        if not (base / "logs" / "meta.properties").exists():
            done = subprocess.run(
                [
                    java_binary(),
                    "-cp",
                    f"{self.ctx.installed.kafka_libs}/*",
                    f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id(),
                    "-c",
                    str(props),
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"kafka storage format failed (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-2000:]}"
                )

    def command(self) -> list[str]:
        return _kafka_jvm(self, "kafka.Kafka", "server.properties")

    def probe(self) -> str | None:
        """Metadata through the PLAINTEXT listener, then through the SASL one
        with the user of this data directory (from another directory, which
        has none, only that the SASL port answers)."""
        if not port_in_use(self.port):
            return "broker port closed"
        problem = _metadata(KafkaConfig(bootstrap_servers=f"127.0.0.1:{self.port}"))
        if problem is not None:
            return problem
        sport = self.ctx.cfg.kafka_sasl_port
        if not port_in_use(sport):
            return f"SASL listener (port {sport}) closed: restart kafka"
        try:
            client = sasl_client(self.ctx.data)
        except FileNotFoundError:
            # ``stack status`` from another directory: no credentials here
            # (the broker's own data directory has them); the port answers
            return None
        problem = _metadata(
            KafkaConfig(bootstrap_servers=f"127.0.0.1:{sport}", client=client)
        )
        return None if problem is None else f"SASL listener: {problem}"


def _metadata(kafka: KafkaConfig) -> str | None:
    """What keeps a metadata request to ``kafka`` from naming a broker."""
    try:
        admin = kafkaclient.admin(kafka, {"logger": _QUIET})
        md = admin.list_topics(timeout=3)
    except Exception as exc:  # noqa: BLE001 (KafkaException, or FatalError: refused)
        return f"metadata request failed: {exc}"
    return None if md.brokers else "no broker in metadata"


class Connect(Service):
    name = "connect"

    def prepare(self) -> None:
        base = self.ctx.dir("connect")
        base.mkdir(parents=True, exist_ok=True)
        (base / "connect-distributed.properties").write_text(
            f"bootstrap.servers=127.0.0.1:{self.ctx.cfg.kafka_port}\n"
            "group.id=readside-connect\n"
            "key.converter=org.apache.kafka.connect.json.JsonConverter\n"
            "value.converter=org.apache.kafka.connect.json.JsonConverter\n"
            "key.converter.schemas.enable=true\nvalue.converter.schemas.enable=true\n"
            "offset.storage.topic=readside-connect-offsets\n"
            "config.storage.topic=readside-connect-configs\n"
            "status.storage.topic=readside-connect-status\n"
            "offset.storage.replication.factor=1\nconfig.storage.replication.factor=1\n"
            "status.storage.replication.factor=1\noffset.flush.interval.ms=1000\n"
            f"listeners=http://127.0.0.1:{self.port}\n"
            f"rest.advertised.host.name=127.0.0.1\n"
            f"plugin.path={self.ctx.installed.plugin_path}\n"
            "plugin.discovery=only_scan\ntopic.creation.enable=true\n"
            # Connector configs may name secrets instead of holding them
            # (connect.user_ref, connect.password_ref).
            "config.providers=file,env\n"
            "config.providers.file.class="
            "org.apache.kafka.common.config.provider.FileConfigProvider\n"
            "config.providers.env.class="
            "org.apache.kafka.common.config.provider.EnvVarConfigProvider\n"
        )
        _log4j(base / "log4j2.properties")

    def command(self) -> list[str]:
        return _kafka_jvm(
            self,
            "org.apache.kafka.connect.cli.ConnectDistributed",
            "connect-distributed.properties",
        )

    def probe(self) -> str | None:
        url = f"http://127.0.0.1:{self.port}/connector-plugins?connectorsOnly=false"
        try:
            plugins, _ = http_json(url)
        except (OSError, ValueError) as exc:
            return f"REST probe failed: {exc.__class__.__name__}"
        names = [p.get("class") for p in plugins] if isinstance(plugins, list) else []
        if DEBEZIUM_CLASS not in names:
            return "Debezium connector not in plugins"
        if APICURIO_CONVERTER_CLASS not in names:
            return "Apicurio Avro converter not in plugins"
        return None


class Registry(Service):
    """Apicurio Registry: the schema registry of ``kafka.format: avro``.

    Its SQL storage is H2; pointed at a file under the data directory (the
    app's default is in memory), the schemas outlive a restart, as the
    records in Kafka that name them by id do.
    """

    name = "registry"

    def command(self) -> list[str]:
        return [
            java_binary(),
            "-Xms64m",
            "-Xmx384m",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(self.ctx.installed.registry_jar),
        ]

    def env(self) -> dict[str, str]:
        env = super().env()
        db = self.ctx.dir(self.name) / "registry"
        env["REGISTRY_DATASOURCE_URL"] = f"jdbc:h2:file:{db}"
        return env

    def probe(self) -> str | None:
        url = f"http://127.0.0.1:{self.port}/health/ready"
        try:
            health, _ = http_json(url)
        except (OSError, ValueError) as exc:
            return f"readiness probe failed: {exc.__class__.__name__}"
        status = health.get("status") if isinstance(health, dict) else None
        return None if status == "UP" else f"readiness {status}"


SERVICE_ORDER: list[type[Service]] = [
    Postgres,
    Redis,
    Elasticsearch,
    FerretBackend,
    FerretDB,
    Kafka,
    Registry,
    Connect,
]
