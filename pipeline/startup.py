"""What a worker prepares before it consumes: its settings, topics and stores.

Kafka, the source or a store may be restarting when a worker starts (after a
crash of the host, all of them are); every step is retried with backoff until
it succeeds or a stop is asked, so that a worker started first simply waits
for the others (:func:`pipeline.sinkwriter.until_reachable`).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from confluent_kafka.admin import AdminClient

from connectors.base import Sink
from pipeline import dlqtopic, groups, kafkaclient, layout, layoutguard
from pipeline.aggregate import prepare_views
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config
from pipeline.errors import ConfigError, Stopped
from pipeline.sinkwriter import Backoff, open_sinks, until_reachable
from pipeline.views import View, build_views

logger = logging.getLogger(__name__)

#: The young generation's collection threshold of a worker or snapshot
#: process (CPython's default is 700): see :func:`tune_gc`.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make CPython's cycle collector cheap for a process that moves records.

    Decoding one change allocates a few dozen dicts and lists (the rows, the
    document, the store's operation), and a worker holds a whole batch of
    them while it writes. With the default threshold a young collection runs
    every 700 allocations and the older generations, which by then hold the
    batch, are scanned again and again for cycles these objects do not form:
    the decoding of a batch held in memory ran at 0.6-0.8 of its rate with
    collections this rare (``python -m bench`` shows the worker's rate).
    Reference counting still frees every object at once; a cycle (rare here)
    waits at most 50,000 allocations. What start-up built (modules, config,
    clients) is moved out of the collector's sight with ``gc.freeze()``.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def consumer_config(cfg: Config, scope: groups.Scope | None = None) -> dict[str, Any]:
    """The worker's consumer settings: the shared ``kafka.client`` ones, then
    readside's, then ``kafka.extra``; its group is that of its scope, the
    views and sinks it serves (:mod:`pipeline.groups`; default: all)."""
    scope = scope or groups.Scope.of(cfg)
    own: dict[str, Any] = {
        "group.id": groups.worker_group(cfg, scope),
        "client.id": groups.client_id(scope),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Eager rebalancing on purpose: librdkafka's cooperative protocol can
        # stall a member's fetchers after a manual commit fails mid-rebalance
        # (seen here as ILLEGAL_GENERATION, then partitions never consumed).
        # Eager revokes everything, and the abandon/rewind path handles that.
        "partition.assignment.strategy": "roundrobin",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": cfg.worker.max_poll_interval_ms,
        "fetch.wait.max.ms": 100,
        "logger": logging.getLogger("librdkafka"),
        **cfg.kafka.extra,
    }
    return kafkaclient.consumer_conf(cfg.kafka, own)


def producer_config(cfg: Config, dlq_bytes: int) -> dict[str, Any]:
    """The settings of the producer of dead letters and checkpoints, whose
    largest message is the largest dead letter the topic takes."""
    return cfg.kafka.client_conf(
        {
            "enable.idempotence": True,
            "linger.ms": 20,
            "logger": logging.getLogger("librdkafka"),
            **dlqtopic.producer_settings(dlq_bytes),
        }
    )


def prepare(
    cfg: Config,
    admin: AdminClient,
    views: Mapping[str, View],
    sinks: Mapping[str, Sink],
    topics: Sequence[str],
    stopping: Callable[[], bool],
) -> int | None:
    """Make the checkpoint topic, set up the dead-letter topic for records of
    ``topics``, prepare the views against the source and open the sinks,
    each waited for while unreachable.

    Returns:
        The largest dead letter the dead-letter topic takes, in bytes; or
        ``None`` when a stop was asked first (the sinks are then closed).
    """
    lookup = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    backoff = Backoff.of(cfg.worker)
    try:
        dlq_bytes = until_reachable(
            partial(_prepare_topics, cfg, admin, topics),
            "preparing the checkpoint and dead-letter topics",
            backoff,
            stopping,
        )
        until_reachable(
            partial(prepare_views, views, lookup),
            "reading the aggregate views' tables",
            backoff,
            stopping,
        )
        open_sinks(sinks, backoff, stopping)
    except Stopped as exc:
        logger.info("worker stopping before it could start: %s", exc)
        for sink in sinks.values():
            sink.close()
        return None
    return dlq_bytes


def _prepare_topics(cfg: Config, admin: AdminClient, topics: Sequence[str]) -> int:
    """Create the checkpoint topic and set up the dead-letter topic; the
    largest dead letter the latter takes, in bytes."""
    kafka = cfg.kafka
    ensure_topics(admin, [(kafka.checkpoint_topic, 1, True)], kafka.replication_factor)
    return dlqtopic.prepare_topic(
        admin, kafka.dlq_topic, list(topics), kafka.replication_factor
    )


def served_views(
    cfg: Config,
    view_names: Sequence[str] | None,
    sink_names: Sequence[str] | None,
) -> list[str]:
    """The views a worker serves: ``view_names`` (default: all), less those
    with none of ``sink_names`` (default: any sink).

    Raises:
        ConfigError: an unknown view or sink, or no view writes to the sinks.
    """
    names = list(build_views(cfg, only=view_names))  # checks the names
    if sink_names is None:
        return names
    unknown = set(sink_names) - set(cfg.sinks)
    if unknown:
        raise ConfigError(f"--sinks: unknown sink(s) {', '.join(sorted(unknown))}")
    defined = cfg.effective_views()
    names = [n for n in names if set(defined[n].sinks) & set(sink_names)]
    if not names:
        raise ConfigError("--sinks: no view of this worker writes to them")
    return names


def start_guard(
    cfg: Config, guard: layoutguard.Guard, early: list[int]
) -> layout.Recorded | None:
    """``guard.start()``, retried with backoff while Kafka or the source is
    not readable yet (a broker just restarted has no partition leaders for a
    few seconds); ``None`` once a stop was asked meanwhile."""
    try:
        return until_reachable(
            guard.start,
            "start-up checks",
            Backoff.of(cfg.worker),
            lambda: bool(early),
        )
    except Stopped:
        return None
