"""The JVM services of the local stack: the Kafka broker
(:mod:`pipeline.stack.kafka_broker`), Kafka Connect and the schema registry.

Kafka and Connect run from the jars ``provision`` resolved, with a log4j2
configuration of their own; Connect finds the Debezium connector and
Apicurio's Avro converter on its plugin path. Connect's REST API asks for
basic authentication (Kafka's ``BasicAuthSecurityRestExtension``) of one
user, :data:`REST_USER` (:func:`rest_user`). The registry is Apicurio
Registry's runnable app, keeping its schemas in an H2 file.
"""

from __future__ import annotations

import base64
import json
import urllib.error
from pathlib import Path

from pipeline.stack import keycloak, tls
from pipeline.stack.ferretdb import FerretBackend, FerretDB
from pipeline.stack.kafka_broker import (
    Kafka,
    cluster_id,
    ensure_scram_user,
    kafka_jvm,
    log4j,
)
from pipeline.stack.kafka_users import (
    CONNECT_FILE,
    CONNECT_USER,
    SASL_FILE,
    connect_worker,
    sasl_client,
    scram_client,
)
from pipeline.stack.postgres import Postgres
from pipeline.stack.probes import refuses_anonymous
from pipeline.stack.redis_server import Redis
from pipeline.stack.services import (
    APICURIO_CONVERTER_CLASS,
    DEBEZIUM_CLASS,
    Elasticsearch,
    Service,
    http_json,
    java_binary,
)

#: the one user of Connect's REST API, and where its password is kept
REST_USER = "readside"
#: Connect's source offset commits, ms: each one confirms to the slot what
#: Kafka holds, which a read with min_lsn may wait for (docs/design.md, the
#: read-your-writes watermark); a commit that changed nothing writes nothing
OFFSET_FLUSH_MS = 100
REST_CLIENT = "rest-client.json"
_REST_EXTENSION = (
    "org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension"
)
_REST_LOGIN = (
    "org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule"
)


def rest_user(data: Path) -> dict[str, str]:
    """The ``connect`` settings of the REST API's user: ``username`` and
    ``password``.

    Raises:
        FileNotFoundError: the stack's Connect never started with it.
    """
    user: dict[str, str] = json.loads((data / "connect" / REST_CLIENT).read_text())
    return {"username": user["username"], "password": user["password"]}


class Connect(Service):
    """Kafka Connect, one distributed worker running Debezium.

    It reaches Kafka through the SASL_SSL listener as a SCRAM user of its
    own (``kafka_users.connect_worker``), made before the worker starts,
    for its own clients and for those it makes for connectors. Its REST
    API answers only :data:`REST_USER` (401 to anyone else): the users file
    and the JAAS file naming it are the worker's, readable by it alone.
    """

    name = "connect"
    needs = ("kafka",)
    #: Debezium's replication connection and the Avro converter's registry
    uses = ("postgres", "registry")

    def _rest_login(self, base: Path) -> Path:
        """The REST user's password file, users file and JAAS file; returns
        the JAAS file."""
        user = tls.secret_file(base / REST_CLIENT, REST_USER)
        users = base / "rest-users.properties"
        jaas = base / "rest-jaas.conf"
        tls.write_private(users, f"{user['username']}={user['password']}\n")
        tls.write_private(
            jaas, f'KafkaConnect {{\n  {_REST_LOGIN} required\n  file="{users}";\n}};\n'
        )
        return jaas

    def prepare(self) -> None:
        base = self.ctx.dir("connect")
        base.mkdir(parents=True, exist_ok=True)
        self._rest_login(base)
        user = ensure_scram_user(self.ctx, CONNECT_FILE, CONNECT_USER)
        security = "".join(line + "\n" for line in connect_worker(self.ctx.data, user))
        # private: it holds the SCRAM user's password
        tls.write_private(
            base / "connect-distributed.properties",
            f"bootstrap.servers=127.0.0.1:{self.ctx.cfg.kafka_ssl_port}\n"
            + security
            + "group.id=readside-connect\n"
            "key.converter=org.apache.kafka.connect.json.JsonConverter\n"
            "value.converter=org.apache.kafka.connect.json.JsonConverter\n"
            "key.converter.schemas.enable=true\nvalue.converter.schemas.enable=true\n"
            "offset.storage.topic=readside-connect-offsets\n"
            "config.storage.topic=readside-connect-configs\n"
            "status.storage.topic=readside-connect-status\n"
            "offset.storage.replication.factor=1\nconfig.storage.replication.factor=1\n"
            "status.storage.replication.factor=1\n"
            f"offset.flush.interval.ms={OFFSET_FLUSH_MS}\n"
            f"listeners=http://127.0.0.1:{self.port}\n"
            f"rest.advertised.host.name=127.0.0.1\n"
            f"plugin.path={self.ctx.installed.plugin_path}\n"
            "plugin.discovery=only_scan\ntopic.creation.enable=true\n"
            f"rest.extension.classes={_REST_EXTENSION}\n"
            # Connector configs may name secrets instead of holding them
            # (connect.user_ref, connect.password_ref).
            "config.providers=file,env\n"
            "config.providers.file.class="
            "org.apache.kafka.common.config.provider.FileConfigProvider\n"
            "config.providers.env.class="
            "org.apache.kafka.common.config.provider.EnvVarConfigProvider\n",
        )
        log4j(base / "log4j2.properties")

    def command(self) -> list[str]:
        jaas = self.ctx.dir("connect") / "rest-jaas.conf"
        return kafka_jvm(
            self,
            "org.apache.kafka.connect.cli.ConnectDistributed",
            "connect-distributed.properties",
            [f"-Djava.security.auth.login.config={jaas}"],
        )

    def probe(self) -> str | None:
        """The worker's ``/health`` (healthy once it joined its group through
        Kafka and read its topics: a worker Kafka refuses stays starting),
        then its plugin list naming Debezium and Apicurio's converter, as
        the REST user; first that the API refuses a request without it. From
        another directory, which has no credentials, only that refusal."""
        root = f"http://127.0.0.1:{self.port}"
        if problem := refuses_anonymous(f"{root}/connectors", "REST API", self.name):
            return problem
        try:
            user = rest_user(self.ctx.data)
        except FileNotFoundError:
            return None
        token = base64.b64encode(f"{user['username']}:{user['password']}".encode())
        login = {"Authorization": "Basic " + token.decode()}
        try:
            health, _ = http_json(f"{root}/health", headers=login)
        except urllib.error.HTTPError as exc:
            with exc:
                return f"worker not healthy (HTTP {exc.code})"
        except (OSError, ValueError) as exc:
            return f"health probe failed: {exc.__class__.__name__}"
        status = health.get("status") if isinstance(health, dict) else None
        if status != "healthy":
            return f"worker {status}"
        url = f"{root}/connector-plugins?connectorsOnly=false"
        try:
            plugins, _ = http_json(url, headers=login)
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
    records in Kafka that name them by id do. H2 writes a commit to its file
    up to half a second later by default (``WRITE_DELAY`` 500 ms): a registry
    killed then loses a schema whose id it answered, which the connector's
    records already name, and gives the next schema the same id. So each
    commit is written before the answer (``WRITE_DELAY=0``): a schema
    registered or deleted, reads commit nothing
    (``tests/integration/test_registry.py`` kills it at once). Every request
    must log in: basic credentials of a client of the stack's Keycloak, which the
    registry trades for a token there (:mod:`pipeline.stack.keycloak`); what
    a client may do is its role's.
    """

    name = "registry"
    needs = ("keycloak",)

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
        env["REGISTRY_DATASOURCE_URL"] = f"jdbc:h2:file:{db};WRITE_DELAY=0"
        env |= keycloak.secure_registry_env(self.ctx.cfg.keycloak_port)
        return env

    def probe(self) -> str | None:
        """Ready, and its API refuses a client that did not log in."""
        root = f"http://127.0.0.1:{self.port}"
        artifacts = f"{root}/apis/registry/v2/groups/default/artifacts"
        if problem := refuses_anonymous(artifacts, "API", self.name):
            return problem
        url = f"{root}/health/ready"
        try:
            health, _ = http_json(url)
        except (OSError, ValueError) as exc:
            return f"readiness probe failed: {exc.__class__.__name__}"
        status = health.get("status") if isinstance(health, dict) else None
        return None if status == "UP" else f"readiness {status}"


__all__ = [
    "SASL_FILE",
    "SERVICE_ORDER",
    "Kafka",
    "cluster_id",
    "sasl_client",
    "scram_client",
]

SERVICE_ORDER: list[type[Service]] = [
    Postgres,
    Redis,
    Elasticsearch,
    FerretBackend,
    FerretDB,
    Kafka,
    keycloak.Keycloak,
    Registry,
    Connect,
]
