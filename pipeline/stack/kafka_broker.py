"""The stack's Kafka broker: one KRaft broker and controller, with no
listener that takes a client without credentials.

* SASL_PLAINTEXT on ``stack.kafka_sasl_port`` and SASL_SSL on
  ``stack.kafka_ssl_port``, each taking the mechanisms PLAIN (one user,
  ``kafka_users.sasl_client``), SCRAM-SHA-256 and SCRAM-SHA-512 (the users
  ``kafka_users.scram_client`` and Kafka Connect's,
  ``kafka_users.connect_client``); the SASL_SSL listener serves the stack's
  server certificate (:mod:`pipeline.stack.tls`) as a PEM keystore, and its
  clients trust the stack's CA (``kafka_users.over_tls``); Kafka Connect
  and the connectors it runs come in through it. The broker talks to
  itself through the SASL_PLAINTEXT listener as the PLAIN user;
* CONTROLLER on ``stack.kafka_controller_port``, SASL_PLAINTEXT with PLAIN
  too: an admin client may reach a KRaft controller directly, so it is no
  anonymous door either.

PLAIN's user is written into the listeners' JAAS settings. The SCRAM users
live in the cluster's metadata: :func:`ensure_scram_user` (from
:meth:`Kafka.ready` after each start, and from Connect's ``prepare``) sets a
user's credentials through the admin API unless the kept user logs in
already (an upsert: the same on a fresh data directory as on one formatted
before the broker took SCRAM), and keeps its password file only once the
broker takes them, so a password file always names a user the broker knows.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path

from pipeline import kafkaclient
from pipeline.errors import FatalError
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import tls
from pipeline.stack.kafka_users import (
    CONNECT_FILE,
    CONNECT_USER,
    SCRAM_FILE,
    SCRAM_MECHANISMS,
    SCRAM_USER,
    keep_scram_user,
    over_tls,
    sasl_client,
    sasl_user,
    scram_client,
    scram_user,
    upsert_scram,
)
from pipeline.stack.services import Context, Service, java_binary, port_in_use

#: how long ``ready`` waits for the broker to take new SCRAM credentials
SCRAM_WAIT_S = 120.0
MECHANISMS = ",".join(("PLAIN", *SCRAM_MECHANISMS))
SASL_LISTENERS = ("sasl_plaintext", "sasl_ssl")
#: the SCRAM users ``ready`` makes: (password file, user name)
SCRAM_USERS = ((SCRAM_FILE, SCRAM_USER), (CONNECT_FILE, CONNECT_USER))

_QUIET = logging.getLogger("readside.stack.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _escaped(pem: str) -> str:
    """A PEM text as one properties value (Java reads ``\\n`` as a newline)."""
    return pem.strip().replace("\n", "\\n")


def server_properties(svc: Service, user: str, password: str) -> str:
    """``server.properties`` of the broker: listeners, security, storage."""
    cfg = svc.ctx.cfg
    base = svc.ctx.dir("kafka")
    sport, tport = cfg.kafka_sasl_port, cfg.kafka_ssl_port
    cport = cfg.kafka_controller_port
    certs = tls.stack_certs(svc.ctx.data)
    served = f"SASL_PLAINTEXT://127.0.0.1:{sport},SASL_SSL://127.0.0.1:{tport}"
    plain_users = (  # the broker's own login, then the users it takes
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{user}" password="{password}" user_{user}="{password}";'
    )
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{cport}",
        f"listeners={served},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners={served}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.security.protocol.map="
        "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={plain_users}",
    ]
    for name in SASL_LISTENERS:
        prefix = f"listener.name.{name}."
        lines += [
            f"{prefix}sasl.enabled.mechanisms={MECHANISMS}",
            f"{prefix}plain.sasl.jaas.config={plain_users}",
        ]
        lines += [
            f"{prefix}{mech.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for mech in SCRAM_MECHANISMS
        ]
    # PEM given inline: a PEM keystore file would need an encrypted key
    ssl = "listener.name.sasl_ssl.ssl."
    lines += [
        f"{ssl}keystore.type=PEM",
        f"{ssl}keystore.certificate.chain={_escaped(certs.cert.read_text())}",
        f"{ssl}keystore.key={_escaped(certs.key.read_text())}",
        f"log.dirs={base / 'logs'}",
        "num.partitions=3",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.cleaner.backoff.ms=5000",
        "log.segment.bytes=67108864",
    ]
    return "\n".join(lines) + "\n"


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


def log4j(path: Path) -> Path:
    path.write_text(
        "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
        "logger.kafka.name = org.apache.kafka\nlogger.kafka.level = WARN\n"
        "logger.dbz.name = io.debezium\nlogger.dbz.level = INFO\n"
    )
    return path


def kafka_jvm(
    svc: Service, main_class: str, properties: str, options: list[str] | None = None
) -> list[str]:
    """A JVM on the Kafka jars, logging with the service's log4j2 file
    (``options``: more JVM options)."""
    base = svc.ctx.dir(svc.name)
    return [
        java_binary(),
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
        *(options or []),
        "-cp",
        f"{svc.ctx.installed.kafka_libs}/*",
        main_class,
        str(base / properties),
    ]


class Kafka(Service):
    """One KRaft broker and controller (see the module's docstring)."""

    name = "kafka"

    @property
    def port(self) -> int:
        """The SASL_PLAINTEXT listener's: there is no plain one."""
        return self.ctx.cfg.kafka_sasl_port

    @property
    def ports(self) -> list[int]:
        cfg = self.ctx.cfg
        return [self.port, cfg.kafka_controller_port, cfg.kafka_ssl_port]

    def prepare(self) -> None:
        base = self.ctx.dir("kafka")
        base.mkdir(parents=True, exist_ok=True)
        props = base / "server.properties"
        user, password = sasl_user(base)
        # private: it holds the PLAIN password and the server's key
        tls.write_private(props, server_properties(self, user, password))
        log4j(base / "log4j2.properties")
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
        return kafka_jvm(self, "kafka.Kafka", "server.properties")

    def ready(self) -> None:
        """Make the SCRAM users (:func:`ensure_scram_user`): readside's and
        Kafka Connect's, which Connect's start needs.

        Raises:
            FatalError: the broker did not take one within SCRAM_WAIT_S.
        """
        for name, username in SCRAM_USERS:
            ensure_scram_user(self.ctx, name, username)

    def probe(self) -> str | None:
        """The listeners' ports open (closed: a broker started before they
        were configured); then, with the users of this data directory,
        metadata as PLAIN through SASL_PLAINTEXT and SASL_SSL (trusting the
        stack's CA) and as SCRAM-SHA-256 through SASL_SSL. From another
        directory, which has no credentials, only that the ports answer."""
        cfg = self.ctx.cfg
        sport, tport = cfg.kafka_sasl_port, cfg.kafka_ssl_port
        if not port_in_use(sport):
            return "broker port closed"
        if not port_in_use(tport):
            return f"SASL_SSL listener (port {tport}) closed: restart kafka"
        data = self.ctx.data
        try:
            plain = sasl_client(data)
        except FileNotFoundError:
            return None  # ``stack status`` from another directory
        checks = [
            ("SASL listener", sport, plain),
            ("SASL_SSL listener", tport, over_tls(data, plain)),
        ]
        try:
            checks.append(("SCRAM-SHA-256", tport, over_tls(data, scram_client(data))))
        except FileNotFoundError:
            pass  # the SCRAM user is made once the broker is up (ready)
        for what, port, client in checks:
            problem = _metadata(f"127.0.0.1:{port}", client)
            if problem is not None:
                return f"{what}: {problem}"
        return None


def ensure_scram_user(ctx: Context, name: str, username: str) -> dict[str, str]:
    """The SCRAM user of file ``name`` in the broker's folder, made unless
    the kept user logs in already: its credentials (both mechanisms) set
    through the SASL_PLAINTEXT listener as the PLAIN user, then a wait until
    the listener takes them (a broker with many partitions applies the
    change some seconds after the controller committed it), then its
    password file kept. Idempotent; returns the user.

    Raises:
        FatalError: the broker did not take them within SCRAM_WAIT_S.
    """
    base = ctx.dir("kafka")
    user = scram_user(base, name, username)
    port = ctx.cfg.kafka_sasl_port
    if (base / name).exists() and _scram_problem(port, user) is None:
        return user  # set by an earlier start, and taken
    admin = kafkaclient.admin(
        KafkaConfig(
            bootstrap_servers=f"127.0.0.1:{port}", client=sasl_client(ctx.data)
        ),
        {"logger": _QUIET},
    )
    upsert_scram(admin, user)
    deadline = time.monotonic() + SCRAM_WAIT_S
    while (problem := _scram_problem(port, user)) is not None:
        if time.monotonic() > deadline:
            raise FatalError(
                f"kafka did not take the SCRAM user {user['username']} "
                f"within {SCRAM_WAIT_S:.0f}s: {problem}"
            )
        time.sleep(1.0)
    keep_scram_user(base, name)
    return user


def _scram_problem(port: int, user: dict[str, str]) -> str | None:
    """What keeps the SASL listener on ``port`` from taking ``user`` with
    each SCRAM mechanism (None: it takes it)."""
    for mech in SCRAM_MECHANISMS:
        client = {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mech,
            "sasl.username": user["username"],
            "sasl.password": user["password"],
        }
        problem = _metadata(f"127.0.0.1:{port}", client)
        if problem is not None:
            return f"{mech}: {problem}"
    return None


def _metadata(bootstrap: str, client: dict[str, str]) -> str | None:
    """What keeps a metadata request to ``bootstrap`` with ``client``'s
    settings from naming a broker (a refusal is not remembered: a probe
    looks again)."""
    kafka = KafkaConfig(bootstrap_servers=bootstrap, client=client)
    try:
        kafkaclient.verify(kafka, remember=False)
        admin = kafkaclient.admin(kafka, {"logger": _QUIET})
        md = admin.list_topics(timeout=3)
    except Exception as exc:  # noqa: BLE001 (KafkaException, or FatalError: refused)
        return f"metadata request failed: {exc}"
    return None if md.brokers else "no broker in metadata"
