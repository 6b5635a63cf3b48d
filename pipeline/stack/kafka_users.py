"""The stack's Kafka users and the ``kafka.client`` settings of each.

PLAIN's user (``sasl-client.json``) is written into the broker's JAAS
settings; the SCRAM users live in the cluster's metadata, set through the
admin API (:func:`upsert_scram`): readside's (``scram-client.json``) and
Kafka Connect's (``connect-client.json``, :func:`connect_worker`). Every
file is in the broker's folder of the stack's data directory, readable by
its owner alone.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from pipeline.stack import tls

SASL_FILE = "sasl-client.json"
SCRAM_FILE = "scram-client.json"
SCRAM_USER = "readside-scram"
CONNECT_FILE = "connect-client.json"
CONNECT_USER = "readside-connect"
#: the mechanism Connect's worker logs in with (over SASL_SSL)
CONNECT_MECHANISM = "SCRAM-SHA-512"
#: what Connect's worker properties repeat the security settings under: its
#: own clients (group, internal topics), then those it makes for connectors
CONNECT_PREFIXES = ("", "producer.", "consumer.", "admin.")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: PBKDF2 rounds of the stored SCRAM credentials (Kafka's least is 4096)
SCRAM_ITERATIONS = 8192


def _user(path: Path) -> dict[str, str]:
    user: dict[str, str] = json.loads(path.read_text())
    return user


def sasl_client(data: Path) -> dict[str, str]:
    """The ``kafka.client`` settings of the broker's SASL_PLAINTEXT listener
    with mechanism PLAIN (user and password from
    ``<data>/kafka/sasl-client.json``, written by the broker's first start).

    Raises:
        FileNotFoundError: the broker was never started with that listener.
    """
    user = _user(data / "kafka" / SASL_FILE)
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user["username"],
        "sasl.password": user["password"],
    }


def scram_client(data: Path, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    """The ``kafka.client`` settings of the SASL_PLAINTEXT listener with
    ``mechanism`` (SCRAM-SHA-256 or -512) as the SCRAM user (password from
    ``<data>/kafka/scram-client.json``, written once the broker knows it).

    Raises:
        FileNotFoundError: no start of the broker has made the SCRAM user.
    """
    user = _user(data / "kafka" / SCRAM_FILE)
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user["username"],
        "sasl.password": user["password"],
    }


def over_tls(data: Path, client: dict[str, str]) -> dict[str, str]:
    """``client``'s settings for the SASL_SSL listener: the same mechanism
    and user, over TLS, trusting the stack's CA (``ssl.ca.location``)."""
    return {
        **client,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(data / tls.TLS_DIR / "ca.crt"),
    }


def connect_user(data: Path) -> dict[str, str]:
    """Kafka Connect's SCRAM user (``<data>/kafka/connect-client.json``,
    written once the broker knows it).

    Raises:
        FileNotFoundError: no start of Connect has made the user.
    """
    return _user(data / "kafka" / CONNECT_FILE)


def connect_client(data: Path) -> dict[str, str]:
    """The ``kafka.client`` settings of Connect's user: SASL_SSL,
    :data:`CONNECT_MECHANISM`, trusting the stack's CA.

    Raises:
        FileNotFoundError: no start of Connect has made the user.
    """
    user = connect_user(data)
    scram = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": CONNECT_MECHANISM,
        "sasl.username": user["username"],
        "sasl.password": user["password"],
    }
    return over_tls(data, scram)


def connect_worker(data: Path, user: dict[str, str]) -> list[str]:
    """The lines of Connect's worker properties that make its clients log in
    as ``user`` with :data:`CONNECT_MECHANISM` over SASL_SSL, trusting the
    stack's CA (a PEM truststore): once for the worker's own clients, once
    per prefix of the clients it makes for connectors
    (:data:`CONNECT_PREFIXES`). The password is in them: the file that
    holds them must be its owner's alone."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user["username"]}" password="{user["password"]}";'
    )
    settings = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": CONNECT_MECHANISM,
        "sasl.jaas.config": jaas,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(data / tls.TLS_DIR / "ca.crt"),
    }
    return [
        f"{prefix}{key}={value}"
        for prefix in CONNECT_PREFIXES
        for key, value in settings.items()
    ]


def sasl_user(base: Path) -> tuple[str, str]:
    """The PLAIN user, made once with a random password."""
    user = tls.secret_file(base / SASL_FILE, "readside")
    return user["username"], user["password"]


def scram_user(
    base: Path, name: str = SCRAM_FILE, username: str = SCRAM_USER
) -> dict[str, str]:
    """A SCRAM user's name and password: kept in ``base``'s file ``name``
    (``scram-client.json``: readside's) once the broker knows them
    (:func:`keep_scram_user`), pending in ``<name>.part`` until then (0600;
    made once, as ``username`` with a random password)."""
    path = base / name
    if path.exists():
        return _user(path)
    part = base / (name + ".part")
    if not part.exists():
        user = {"username": username, "password": secrets.token_urlsafe(18)}
        part.touch(mode=0o600)
        part.write_text(json.dumps(user) + "\n")
    return _user(part)


def keep_scram_user(base: Path, name: str = SCRAM_FILE) -> None:
    """Mark the pending SCRAM user of file ``name`` known to the broker (its
    file is what :func:`scram_client`, :func:`connect_client` and the probe
    read)."""
    part = base / (name + ".part")
    if part.exists():
        part.rename(base / name)


def upsert_scram(admin: Any, user: dict[str, str]) -> None:
    """Set ``user``'s SCRAM credentials, one mechanism per request (Kafka
    refuses two alterations of one user in a request), through ``admin``
    (an ``AdminClient``).

    Raises:
        KafkaException: the controller refused an alteration.
    """
    # from the module itself: the package re-exports them untyped
    from confluent_kafka.admin._scram import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    for mech in SCRAM_MECHANISMS:
        info = ScramCredentialInfo(
            getattr(ScramMechanism, mech.replace("-", "_")), SCRAM_ITERATIONS
        )
        upsert: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                user["username"], info, user["password"].encode()
            )
        ]
        done = admin.alter_user_scram_credentials(upsert, request_timeout=30)
        for future in done.values():
            future.result()
