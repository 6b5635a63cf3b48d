"""The stack's Kafka users and the ``kafka.client`` settings of each.

PLAIN's user (``sasl-client.json``) is written into the broker's JAAS
settings; SCRAM's (``scram-client.json``) lives in the cluster's metadata,
set through the admin API (:func:`upsert_scram`). Both files are in the
broker's folder of the stack's data directory, readable by their owner
alone.
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


def sasl_user(base: Path) -> tuple[str, str]:
    """The PLAIN user, made once with a random password."""
    path = base / SASL_FILE
    if not path.exists():
        path.touch(mode=0o600)
        user = {"username": "readside", "password": secrets.token_urlsafe(18)}
        path.write_text(json.dumps(user) + "\n")
    user = _user(path)
    return user["username"], user["password"]


def scram_user(base: Path) -> dict[str, str]:
    """The SCRAM user's name and password: kept in ``base``'s
    ``scram-client.json`` once the broker knows them (:func:`keep_scram_user`),
    pending in ``scram-client.json.part`` until then (0600; made once)."""
    path = base / SCRAM_FILE
    if path.exists():
        return _user(path)
    part = base / (SCRAM_FILE + ".part")
    if not part.exists():
        user = {"username": SCRAM_USER, "password": secrets.token_urlsafe(18)}
        part.touch(mode=0o600)
        part.write_text(json.dumps(user) + "\n")
    return _user(part)


def keep_scram_user(base: Path) -> None:
    """Mark the pending SCRAM user known to the broker (its file is what
    :func:`scram_client` and the probe read)."""
    part = base / (SCRAM_FILE + ".part")
    if part.exists():
        part.rename(base / SCRAM_FILE)


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
