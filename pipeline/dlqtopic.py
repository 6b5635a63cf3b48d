"""The dead-letter topic's settings: kept forever, large enough for any record.

Dead letters are kept until replayed or purged on purpose, so the topic is
created (or, when it exists, changed at worker start) with no retention by
age or size and a delete cleanup policy (compaction would keep one dead letter
per key). Its ``max.message.bytes`` exceeds the largest of the source topics'
by :data:`HEADROOM`, so any source record fits with its headers, and the
producer's ``message.max.bytes`` follows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.checkpoints import ensure_topics
from pipeline.errors import FatalError
from pipeline.kafkaclient import alter_topic, topic_configs

logger = logging.getLogger(__name__)

#: Room for the headers (the error message is cut at 4,000 characters) and
#: the record batch's framing, on top of the largest source record.
HEADROOM = 64 * 1024
#: librdkafka's bounds of ``message.max.bytes``.
PRODUCER_MIN, PRODUCER_MAX = 1_000_000, 1_000_000_000
#: The largest ``max.message.bytes`` a topic takes.
_INT32_MAX = 2**31 - 1
#: The settings every dead letter needs, whatever the topic held before.
KEEP_FOREVER = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
}


def topic_max_bytes(admin: AdminClient, topic: str) -> int:
    """The topic's effective ``max.message.bytes`` (its own or the broker's)."""
    return int(topic_configs(admin, [topic])[topic]["max.message.bytes"])


def _settled_configs(
    admin: AdminClient, topic: str, wait_s: float = 30.0
) -> dict[str, str]:
    """The settings of a topic that may have just been created (the broker can
    answer UNKNOWN_TOPIC_OR_PART for a moment after the creation returned)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return topic_configs(admin, [topic])[topic]
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def prepare_topic(
    admin: AdminClient, topic: str, sources: Iterable[str], replication: int = 1
) -> int:
    """Create or fix the dead-letter topic; returns its ``max.message.bytes``.

    The topic keeps its records forever (:data:`KEEP_FOREVER`) and holds any
    record of ``sources`` (the existing ones among them) with its headers. An
    existing topic that differs is changed in place, with a warning: it was
    created by an older readside (which left the broker's 7-day retention)
    or by hand, and dead letters that expire are records lost silently.

    Raises:
        FatalError: the topic could not be changed (e.g. no ALTER_CONFIGS
            permission); the message says what to set.
    """
    existing = set(admin.list_topics(timeout=10).topics)
    limits = topic_configs(admin, [t for t in sources if t in existing])
    needed = max(
        (int(c["max.message.bytes"]) + HEADROOM for c in limits.values()), default=0
    )
    needed = min(needed, _INT32_MAX)
    want = dict(KEEP_FOREVER)
    if needed:
        want["max.message.bytes"] = str(needed)
    ensure_topics(admin, [(topic, 1, False)], replication, configs={topic: want})
    have = _settled_configs(admin, topic)
    change = {k: v for k, v in want.items() if have.get(k) != v}
    if int(have["max.message.bytes"]) >= needed:
        change.pop("max.message.bytes", None)
    if not change:
        return int(have["max.message.bytes"])
    try:
        alter_topic(admin, topic, change)
    except KafkaException as exc:
        settings = ",".join(f"{k}={v}" for k, v in change.items())
        raise FatalError(
            f"dead-letter topic {topic} must keep its records and hold the largest "
            f"source record; changing it failed ({exc.args[0]}). Set it with: "
            f"kafka-configs --alter --entity-type topics --entity-name {topic} "
            f"--add-config {settings}"
        ) from exc
    logger.warning(
        "dead-letter topic config changed topic=%s %s",
        topic,
        " ".join(f"{k}={have.get(k)}->{v}" for k, v in change.items()),
    )
    return int(change.get("max.message.bytes", have["max.message.bytes"]))


def producer_settings(max_bytes: int) -> dict[str, Any]:
    """Producer settings for a dead-letter topic that takes ``max_bytes``."""
    return {"message.max.bytes": min(max(max_bytes, PRODUCER_MIN), PRODUCER_MAX)}
