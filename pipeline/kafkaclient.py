"""Every Kafka client readside makes, built from the ``kafka`` section.

The worker, the commands, the read API and the local stack's probe build
their consumers, producers and admin clients here and nowhere else
(``tests/unit/test_kafka_client.py`` keeps it so). Each client's settings are
:meth:`KafkaConfig.client_conf <pipeline.sourceconfig.KafkaConfig.client_conf>`:
``bootstrap.servers``, then the shared ``kafka.client`` settings (TLS, SASL,
``client.id`` ...), then the client's own (its group, its commit mode). So
a cluster that wants TLS or SASL is reached by every part alike, not by the
worker alone.

Wrong credentials: librdkafka does not fail a call when the brokers refuse
its credentials; it reports the refusal to an ``error_cb`` served by
``poll`` and keeps reconnecting, so a metadata request or a commit merely
times out, which readside meets as an outage and waits out. Before the first
client of a secured configuration (:attr:`KafkaConfig.secured`) is handed
out, :func:`verify` therefore asks the brokers for their metadata with a
probe that listens to ``error_cb``: a refusal, told by its error code, ends
the command with a :class:`FatalError` naming ``kafka.client`` (and is
remembered: a long-running reader, such as the read API's freshness, meets
it again at once, without another probe); an answer marks the settings good
for the life of the process; silence (the brokers
are down) is left to the caller's handling of outages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported at runtime, missing from the stubs' __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from pipeline.errors import ConfigError, FatalError
from pipeline.sourceconfig import KafkaConfig

logger = logging.getLogger(__name__)

C = TypeVar("C")

#: Error codes of a broker refusing the client's credentials or its TLS
#: handshake: waiting does not cure them.
REFUSALS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._SSL,
    }
)

#: The longest :func:`verify` waits for the brokers to answer or refuse.
VERIFY_S = 10.0

_QUIET = logging.getLogger("readside.kafkaclient.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

#: settings the brokers took, and those they refused (with what they said)
_verified: set[tuple[str, ...]] = set()
_refused: dict[tuple[str, ...], str] = {}
_lock = threading.Lock()


#: readside's defaults for every consumer, under ``kafka.client`` and the
#: consumer's own settings. librdkafka stops fetching a partition once its
#: local queue holds ``queued.max.messages.kbytes`` (64 MB) and then waits
#: ``fetch.queue.backoff.ms``, 1 s by default, before fetching again. A
#: worker catching up drains 64 MB of JSON records (about 10,000 of
#: Debezium's with schemas) well within that second and then sat idle in
#: ``consume()``: the worker ran at the broker's pace, not its own
#: (``python -m bench``'s machine table showed the cores half idle).
CONSUMER_DEFAULTS: dict[str, Any] = {"fetch.queue.backoff.ms": 10}


def consumer_conf(kafka: KafkaConfig, own: Mapping[str, Any]) -> dict[str, Any]:
    """A consumer's settings: :data:`CONSUMER_DEFAULTS`, then the shared
    ones (``bootstrap.servers``, ``kafka.client``), then ``own``."""
    return {**CONSUMER_DEFAULTS, **kafka.client_conf(own)}


def consumer(kafka: KafkaConfig, own: Mapping[str, Any]) -> Consumer:
    """A consumer of ``kafka``'s brokers with ``own`` settings over the shared ones."""
    verify(kafka)
    return new_consumer(consumer_conf(kafka, own))


def producer(kafka: KafkaConfig, own: Mapping[str, Any] | None = None) -> Producer:
    """A producer of ``kafka``'s brokers with ``own`` settings over the shared ones."""
    verify(kafka)
    return new_producer(kafka.client_conf(own))


def admin(kafka: KafkaConfig, own: Mapping[str, Any] | None = None) -> AdminClient:
    """An admin client of ``kafka``'s brokers."""
    verify(kafka)
    return _build(AdminClient, kafka.client_conf(own))


def topic_configs(
    admin: AdminClient, topics: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Every setting of each topic, effective value (its own or the broker's)."""
    res = {t: ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics}
    if not res:
        return {}
    futures = admin.describe_configs(list(res.values()))
    out: dict[str, dict[str, str]] = {}
    for topic, r in res.items():
        entries = futures[r].result(timeout=30)
        out[topic] = {name: e.value for name, e in entries.items()}
    return out


def alter_topic(admin: AdminClient, topic: str, change: Mapping[str, str]) -> None:
    """Set ``change`` on the topic, leaving its other settings as they are.

    Raises:
        KafkaException: the broker refused (e.g. no ALTER_CONFIGS permission).
    """
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in change.items()
    ]
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)


def new_consumer(conf: Mapping[str, Any]) -> Consumer:
    """A consumer of settings already merged by :func:`consumer_conf` (the
    worker's, whose settings its start-up composes)."""
    return _build(Consumer, conf)


def new_producer(conf: Mapping[str, Any]) -> Producer:
    """A producer of settings already merged by ``KafkaConfig.client_conf``."""
    return _build(Producer, conf)


def _build(cls: Callable[[dict[str, Any]], C], conf: Mapping[str, Any]) -> C:
    """``cls(conf)``; librdkafka's refusal of a setting as a ConfigError."""
    try:
        return cls(dict(conf))
    except KafkaException as exc:
        raise ConfigError(
            "kafka.client / kafka.extra: librdkafka refuses the settings: "
            f"{exc.args[0].str()}"
        ) from None


def refusal(err: KafkaError) -> bool:
    """Whether ``err`` is the brokers refusing the credentials or the TLS
    handshake (told by its code, never by its text)."""
    return err.code() in REFUSALS


def verify(kafka: KafkaConfig, *, remember: bool = True) -> None:
    """Make sure the brokers take ``kafka.client``'s credentials, once per
    process and settings (see the module's docstring); nothing to do for a
    PLAINTEXT cluster. ``remember=False`` (a health probe, which looks
    again later) neither trusts nor keeps a refusal.

    Raises:
        FatalError: the brokers refused the credentials or the handshake.
    """
    if not kafka.secured:
        return
    conf = kafka.client_conf()
    key = tuple(f"{k}={v}" for k, v in sorted(conf.items()))
    with _lock:
        if key in _verified:
            return
        said = _refused.get(key) if remember else None
    if said is not None:
        raise FatalError(said)
    refused: list[KafkaError] = []
    probe = new_producer({**conf, "logger": _QUIET, "error_cb": refused.append})
    deadline = time.monotonic() + VERIFY_S
    try:
        while True:
            try:
                probe.list_topics(timeout=1.0)
            except KafkaException as exc:
                refused.append(exc.args[0])
                probe.poll(0)  # serves error_cb with what the brokers said
            else:
                with _lock:
                    _verified.add(key)
                return
            bad = [e for e in refused if refusal(e)]
            if bad:
                said = _refused_message(kafka, bad[0])
                if remember:
                    with _lock:
                        _refused[key] = said
                raise FatalError(said)
            if time.monotonic() >= deadline:
                logger.warning(
                    "kafka credentials unchecked: no broker answered within "
                    "%.0fs bootstrap=%s",
                    VERIFY_S,
                    kafka.bootstrap_servers,
                )
                return
    finally:
        probe.flush(0)


def _refused_message(kafka: KafkaConfig, err: KafkaError) -> str:
    said = (
        f"Kafka at {kafka.bootstrap_servers} refuses the security settings of "
        f"kafka.client: {err.str()}"
    )
    if err.code() == KafkaError._SSL:
        said += (
            " (the TLS handshake failed: the brokers' certificate is checked "
            "against the CA of kafka.client's ssl.ca.location, and the "
            "brokers' names against it)"
        )
    return said
