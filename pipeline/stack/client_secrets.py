"""The passwords a readside configuration needs to reach the local stack,
one plain file each, for ``${file:...}`` references.

Every service keeps its users' secrets as JSON in its own folder of the data
directory (the broker's SCRAM user, Redis's ACL user, FerretDB's backend
role). ``stack up`` writes the password of each user a readside client logs
in as to ``<data_dir>/secrets/<name>.password`` (the folder 0700, the files
0600), which ``readside.yaml`` names::

    sasl.password: ${file:.readside/stack/secrets/kafka.password}

They are written again after every start, so they follow a service whose
data directory was made anew.

The source's superuser password is also written as a properties file for
Kafka Connect's ``file`` config provider, which resolves
``connect.password_ref`` on Connect's side (a relative path is taken from
Connect's working directory, the stack's data directory)::

    password_ref: ${file:secrets/postgres.properties:password}

and so is the secret of the schema registry's client that the connector's
converter logs in as (``connect.registry_password_ref``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.stack.ferretdb import MONGO_CLIENT, FerretBackend
from pipeline.stack.jvm import REST_CLIENT
from pipeline.stack.kafka_users import SCRAM_FILE
from pipeline.stack.keycloak import CLIENTS, CONNECT_CLIENT, WORKER_CLIENT, Keycloak
from pipeline.stack.postgres import Postgres
from pipeline.stack.redis_server import REDIS_CLIENT, Redis
from pipeline.stack.tls import SUPERUSER_CLIENT, write_private

SECRETS_DIR = "secrets"
#: the secrets Kafka Connect reads too (as ``<name>.properties``)
CONNECT_SIDE = ("postgres", "registry-connect")


def sources(data: Path) -> dict[str, Path]:
    """Each exported secret's name and the JSON file it is read from."""
    return {
        "postgres": data / Postgres.name / SUPERUSER_CLIENT,
        "kafka": data / "kafka" / SCRAM_FILE,
        "redis": data / Redis.name / REDIS_CLIENT,
        "mongodb": data / FerretBackend.name / MONGO_CLIENT,
        "connect": data / "connect" / REST_CLIENT,
        # the schema registry's clients (Keycloak's): the worker's and the
        # connector's converter's
        "registry": data / Keycloak.name / CLIENTS[WORKER_CLIENT][1],
        "registry-connect": data / Keycloak.name / CLIENTS[CONNECT_CLIENT][1],
    }


def export(data: Path) -> list[Path]:
    """Write the password file of every user whose JSON file exists; returns
    the files written."""
    folder = data / SECRETS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    written = []
    for name, source in sources(data).items():
        if not source.exists():
            continue
        password = json.loads(source.read_text())["password"]
        path = folder / f"{name}.password"
        write_private(path, password + "\n")
        written.append(path)
        if name in CONNECT_SIDE:
            path = folder / f"{name}.properties"
            write_private(path, f"password={password}\n")
            written.append(path)
    return written
