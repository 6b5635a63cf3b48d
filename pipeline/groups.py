"""Which consumer group applies which views to which sinks.

A consumer group splits a topic's partitions between its members, and each
member commits the offsets of its partitions for the whole group. So every
member of a group must apply the same views to the same sinks: a worker
serving view A beside one serving B in the same group would each commit
records the other's views never saw. Hence a worker's *scope* (the views it
applies and the sinks it writes them to) names its group:

* a worker serving every view of the config into all their sinks joins
  ``kafka.group_id``;
* ``--views a,b`` and ``--sinks x,y`` give a group of that scope,
  ``<group_id>.views.<a>+<b>`` and/or ``.sinks.<x>+<y>`` (sorted), which reads
  every partition of its topics. Workers per sink are how a slow or failing
  store is kept from holding back the healthy ones: each sink's group goes
  at its store's pace (as Kafka Connect runs one task set per sink
  connector), at the cost of decoding every record once per group;
* every worker names its scope in its ``client.id``, and refuses to run
  beside a member of its group that serves another scope (two deployments
  of different configs under one ``group_id``).

Readers of progress (the read-your-writes watermark, ``status``, the test
harness) find by these names, per view and sink, the groups that apply it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.redelivery import parse_commit_lsn
from pipeline.sourceconfig import KafkaConfig

logger = logging.getLogger(__name__)

VIEWS_MARK = ".views."
SINKS_MARK = ".sinks."
#: How a worker's client.id starts (the rest is its scope's tag).
CLIENT_PREFIX = "readside-worker-"

Part = tuple[str, int]
PerPair = dict[tuple[str, str], dict[Part, int]]


@dataclass(frozen=True)
class Scope:
    """The views a worker applies and the sinks it writes them to."""

    views: frozenset[str]
    sinks: frozenset[str]

    @classmethod
    def of(
        cls,
        cfg: Config,
        views: Iterable[str] | None = None,
        sinks: Iterable[str] | None = None,
    ) -> Scope:
        defined = cfg.effective_views()
        chosen = frozenset(defined if views is None else views)
        every = frozenset(s for v in chosen for s in defined[v].sinks)
        return cls(chosen, every if sinks is None else frozenset(sinks) & every)

    def pairs(self, cfg: Config) -> set[tuple[str, str]]:
        """The (view, sink) pairs this scope applies."""
        defined = cfg.effective_views()
        return {(v, s) for v in self.views for s in defined[v].sinks if s in self.sinks}


def worker_group(cfg: Config, scope: Scope) -> str:
    """The consumer group of a worker of ``scope``."""
    full = Scope.of(cfg)
    name = cfg.kafka.group_id
    if scope.views != full.views:
        name += VIEWS_MARK + "+".join(sorted(scope.views))
    if scope.sinks != Scope.of(cfg, scope.views).sinks:
        name += SINKS_MARK + "+".join(sorted(scope.sinks))
    return name


def scope_of_group(cfg: Config, group: str) -> Scope | None:
    """The scope of the workers of ``group``, or None for another group."""
    base = cfg.kafka.group_id
    if group == base:
        return Scope.of(cfg)
    if not group.startswith(base + "."):
        return None
    rest = group[len(base) :]
    views: list[str] | None = None
    sinks: list[str] | None = None
    if rest.startswith(VIEWS_MARK):
        rest = rest[len(VIEWS_MARK) :]
        listed, _, tail = rest.partition(SINKS_MARK)
        views = listed.split("+")
        rest = SINKS_MARK + tail if tail else ""
    if rest.startswith(SINKS_MARK):
        sinks = rest[len(SINKS_MARK) :].split("+")
        rest = ""
    if rest or (views is None and sinks is None):
        return None
    defined = cfg.effective_views()
    if views is not None and not set(views) <= set(defined):
        return None  # a group of views this config no longer has
    return Scope.of(cfg, views, sinks)


def client_id(scope: Scope) -> str:
    """The worker's client.id: a short fingerprint of its scope."""
    text = ",".join(sorted(scope.views)) + "|" + ",".join(sorted(scope.sinks))
    return CLIENT_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


def foreign_members(kafka: KafkaConfig, group: str, scope: Scope) -> list[str]:
    """Members of ``group`` whose client.id names another scope than
    ``scope`` (as ``host/client.id``); empty when the group is consistent."""
    mine = client_id(scope)
    admin = kafkaclient.admin(kafka)
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        logger.warning("cannot describe group=%s; member check skipped", group)
        return []
    return [
        f"{m.host}/{m.client_id}"
        for m in desc.members
        if m.client_id.startswith(CLIENT_PREFIX) and m.client_id != mine
    ]


def config_groups(
    admin: AdminClient, cfg: Config, timeout_s: float, serving: bool = False
) -> dict[str, Scope]:
    """The consumer groups of workers of ``cfg``, with their scopes; with
    ``serving``, only those that have a member now."""
    listed = admin.list_consumer_groups().result(timeout=timeout_s)
    found: dict[str, Scope] = {}
    for g in listed.valid:
        if serving and g.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD):
            continue
        scope = scope_of_group(cfg, g.group_id)
        if scope is not None:
            found[g.group_id] = scope
    return found


class AppliedOffsets:
    """How far each view is applied in each sink, from the groups' commits.

    A (view, sink) pair's offset on a partition is the highest committed by a
    group whose scope holds the pair (such a group committed only what it
    applied); a view's is the least over its sinks. The list of groups is
    asked again every ``groups_every_s`` so that a new scope is found.

    A list of the groups or a group's offsets that does not come (a
    timeout, a broker error) leaves the admin client for a new one, made at
    the next ask. After a restart of
    the broker, librdkafka's admin client sent every later OffsetFetch where
    no answer came (``_TIMED_OUT: Failed while waiting for response from
    broker``) for as long as it lived, while it still described topics and
    a new client was answered at once; the read-your-writes watermark of a
    server stood still until the server was restarted
    (``tests/integration/test_watermark_outages.py``).
    """

    def __init__(
        self, cfg: Config, timeout_s: float = 5.0, groups_every_s: float = 2.0
    ) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.groups_every_s = groups_every_s
        self._admin: AdminClient | None = None
        self._groups: dict[str, Scope] = {}
        self._listed_at = float("-inf")

    @property
    def admin(self) -> AdminClient:
        """The admin client: a new one after one whose answers did not come."""
        if self._admin is None:
            self._admin = kafkaclient.admin(self.cfg.kafka)
        return self._admin

    def drop_admin(self) -> None:
        """Leave the admin client: the next ask makes a new one."""
        self._admin = None

    def groups(self) -> dict[str, Scope]:
        """The consumer groups of workers of this config, with their scopes."""
        if time.monotonic() - self._listed_at >= self.groups_every_s:
            try:
                self._groups = config_groups(self.admin, self.cfg, self.timeout_s)
            except (KafkaException, TimeoutError):
                self.drop_admin()  # as for the offsets: a new client next time
                raise
            self._listed_at = time.monotonic()
        return self._groups

    def by_pair(self, parts: Iterable[Part]) -> dict[tuple[str, str], dict[Part, int]]:
        """Per (view, sink), the committed offset of each of ``parts`` (absent
        where no group applying the pair committed anything)."""
        return self._by_pair(parts)[0]

    def by_view(self, parts: Iterable[Part]) -> dict[str, dict[Part, int]]:
        """Per view, the committed offset of each of ``parts`` in its slowest
        sink (absent where some sink of the view has nothing committed)."""
        return self.applied(parts)[0]

    def applied(
        self, parts: Iterable[Part]
    ) -> tuple[dict[str, dict[Part, int]], dict[str, dict[Part, int]]]:
        """Per view, :meth:`by_view`'s offsets, and the highest last-commit
        LSN committed with them (:func:`pipeline.redelivery.commit_metadata`)
        in its slowest sink (absent where some sink has none)."""
        wanted = list(parts)
        offsets, lsns = self._by_pair(wanted)
        out: tuple[dict[str, dict[Part, int]], dict[str, dict[Part, int]]] = ({}, {})
        for view, cfg in self.cfg.effective_views().items():
            for got, per_pair in zip(out, (offsets, lsns), strict=True):
                mine = [per_pair[(view, s)] for s in cfg.sinks]
                got[view] = {
                    key: min(m[key] for m in mine)
                    for key in wanted
                    if all(key in m for m in mine)
                }
        return out

    def _by_pair(self, parts: Iterable[Part]) -> tuple[PerPair, PerPair]:
        wanted = [TopicPartition(t, p) for t, p in parts]
        pairs_of = Scope.of(self.cfg).pairs(self.cfg)
        offsets: PerPair = {pair: {} for pair in pairs_of}
        lsns: PerPair = {pair: {} for pair in pairs_of}
        for group, scope in self.groups().items():
            request = ConsumerGroupTopicPartitions(group, wanted)
            futures = self.admin.list_consumer_group_offsets(
                [request], request_timeout=self.timeout_s
            )
            try:
                got = futures[group].result(timeout=self.timeout_s)
            except (KafkaException, TimeoutError):
                self.drop_admin()
                raise
            pairs = scope.pairs(self.cfg) & offsets.keys()
            for tp in got.topic_partitions or ():
                if tp.offset < 0:
                    continue
                key = (tp.topic, tp.partition)
                lsn = parse_commit_lsn(tp.metadata)
                for pair in pairs:
                    offsets[pair][key] = max(offsets[pair].get(key, -1), tp.offset)
                    if lsn is not None:
                        lsns[pair][key] = max(lsns[pair].get(key, lsn), lsn)
        return offsets, lsns
