"""Which consumer group applies which views.

A consumer group splits a topic's partitions between its members, and each
member commits the offsets of its partitions for the whole group. So every
member of a group must apply the same views: a worker serving views A beside
one serving B in the same group would each commit records the other's views
never saw. Hence:

* a worker serving every view of the config joins ``kafka.group_id``;
* a worker started with ``--views`` joins a group of its own view set,
  ``<group_id>.views.<a>+<b>`` (sorted), so each view set reads every
  partition;
* every worker names its view set in its ``client.id``, and refuses to run
  beside a member of its group that serves another set (two deployments of
  different configs under one ``group_id``).

Readers of progress (the read-your-writes watermark, ``status``) find the
groups that apply a view by these names.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline.config import Config

logger = logging.getLogger(__name__)

#: Separates the base group id from the view set in a group's name.
VIEWS_MARK = ".views."
#: How a worker's client.id starts (the rest is its view set's tag).
CLIENT_PREFIX = "readside-worker-"


def worker_group(cfg: Config, views: Iterable[str]) -> str:
    """The consumer group of a worker serving ``views``."""
    chosen = sorted(set(views))
    if set(chosen) == set(cfg.effective_views()):
        return cfg.kafka.group_id
    return f"{cfg.kafka.group_id}{VIEWS_MARK}{'+'.join(chosen)}"


def view_set_tag(views: Iterable[str]) -> str:
    """A short fingerprint of a view set, carried in the worker's client.id."""
    text = ",".join(sorted(set(views)))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def client_id(views: Iterable[str]) -> str:
    return f"{CLIENT_PREFIX}{view_set_tag(views)}"


def views_of_group(cfg: Config, group: str) -> frozenset[str] | None:
    """The views the workers of ``group`` apply, or None for another group."""
    if group == cfg.kafka.group_id:
        return frozenset(cfg.effective_views())
    prefix = f"{cfg.kafka.group_id}{VIEWS_MARK}"
    if not group.startswith(prefix):
        return None
    return frozenset(group[len(prefix) :].split("+"))


def foreign_members(bootstrap: str, group: str, views: Iterable[str]) -> list[str]:
    """Members of ``group`` whose client.id names another view set than
    ``views`` (as ``host/client.id``); empty when the group is consistent."""
    mine = client_id(views)
    admin = AdminClient({"bootstrap.servers": bootstrap})
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


Part = tuple[str, int]


class AppliedOffsets:
    """Per view, how far the groups applying it have committed.

    A view's offset on a partition is the highest committed by any group that
    applies the view (each such group committed only what it applied to every
    sink of the view). The list of groups is asked again every
    ``groups_every_s`` so that a newly started view set is found.
    """

    def __init__(
        self, cfg: Config, timeout_s: float = 5.0, groups_every_s: float = 2.0
    ) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.groups_every_s = groups_every_s
        self.admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        self._groups: dict[str, frozenset[str]] = {}
        self._listed_at = float("-inf")

    def groups(self) -> dict[str, frozenset[str]]:
        """The consumer groups of workers of this config, with their views."""
        if time.monotonic() - self._listed_at >= self.groups_every_s:
            listed = self.admin.list_consumer_groups().result(timeout=self.timeout_s)
            found: dict[str, frozenset[str]] = {}
            for g in listed.valid:
                views = views_of_group(self.cfg, g.group_id)
                if views is not None:
                    found[g.group_id] = views
            self._groups = found
            self._listed_at = time.monotonic()
        return self._groups

    def by_view(self, parts: Iterable[Part]) -> dict[str, dict[Part, int]]:
        """Per view, the committed offset of each of ``parts`` (absent where
        no group applying the view committed anything)."""
        wanted = [TopicPartition(t, p) for t, p in parts]
        out: dict[str, dict[Part, int]] = {v: {} for v in self.cfg.effective_views()}
        for group, views in self.groups().items():
            request = ConsumerGroupTopicPartitions(group, wanted)
            futures = self.admin.list_consumer_group_offsets([request])
            got = futures[group].result(timeout=self.timeout_s)
            for tp in got.topic_partitions or ():
                if tp.offset < 0:
                    continue
                key = (tp.topic, tp.partition)
                for view in views & out.keys():
                    out[view][key] = max(out[view].get(key, -1), tp.offset)
        return out
