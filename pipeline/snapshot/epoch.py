"""A new view epoch for ``readside snapshot VIEW --rebuild`` after the worker
refused a view (:mod:`pipeline.layout`).

**Table view, topic layout changed** (partitions N -> M, or recreated).
Replaying the topic from its beginning into the new generation would bring
the problem along: a key's old event at offset 1000 of partition 0 and its
new event at offset 5 of partition 2 would share one epoch, and the newer
would lose. So the new epoch ``e+1`` begins at a per-partition offset S_p:

1. The connector's task is stopped and resumed (Connect REST ``stop`` and
   ``resume``; ``STOPPED`` is a state one can wait for, where a ``restart``
   returns before it happened). Its new producer reads fresh metadata, so
   every record it sends from then on follows the new layout.
2. Only then S_p = each partition's end offset. Every record at or past S_p
   was produced on the new layout: all events of one key at or past S_p sit
   on one partition, in the order Debezium produced them.
3. The layout (topic id, partition count), ``e+1`` and S are recorded; from
   then on every version of the view is ``table_version(e+1, offset)`` for
   offsets >= S_p, and records below S_p are not applied at all
   (:meth:`pipeline.views.TableView.ops_for`): they belong to epoch e, whose
   generation the rebuild replaces. Every version of ``e+1`` exceeds every
   version of e (``e * 10**13 + offset`` with offsets below 10**13).
4. An incremental snapshot of the table is requested (Debezium's signal,
   :func:`pipeline.snapshot.load.send_signal`). It is sent after S was
   sampled, so its rows arrive at offsets >= S_p, de-duplicated by Debezium's
   watermarks against the concurrent changes; every row alive at any moment
   after S therefore has an event at or past S_p.
5. Before the switch the rebuild waits until every row of the table has an
   event at or past S_p (:func:`await_fill`, :mod:`pipeline.snapshot.fill`);
   the catch-up that follows reads past them, so the new generation holds
   every row.

The new generation thus receives exactly the history from S on, which is a
complete and correctly ordered history of every row on the new layout. Live
workers accept the recorded layout and apply the same versions (epoch and S
come from the same record), so their writes and the catch-up's interleave
safely under the version rule.

**Aggregate view, source xmax behind the mark** (a restored database). Its
versions are ``epoch * 10**17 + xmax * 10**6 + ...``: the new epoch is
``e+1`` and the mark is reset to the source's current xmax; every read of
the new epoch is newer than every stored version of e, whatever xmax says.

**Table view, topic that drops records** (``cleanup.policy`` with
``delete``). Its start no longer holds every row, nor the deletes of a worker
that fell behind its retention (:mod:`pipeline.gaps`): the same new epoch,
without the connector's restart (the layout did not change), makes the new
generation hold exactly the rows the table holds.

Table views on a compacted topic whose layout did not change, and aggregate
views whose source is not behind, keep their epoch: a rebuild of them
replays the same stream at the same versions the live workers use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from connectors import debezium
from pipeline import layout, layoutguard
from pipeline.config import Config
from pipeline.errors import FatalError
from pipeline.snapshot import fill, replay
from pipeline.snapshot.load import send_signal
from pipeline.views import View

logger = logging.getLogger(__name__)

#: how long the rebuild waits for the incremental snapshot of a new epoch
FILL_TIMEOUT_S = fill.WAIT_S


def begin_if_needed(cfg: Config, view: View, sinks: Iterable[str]) -> bool:
    """Start a new epoch of ``view`` if its workers would refuse it; whether so.

    Called once when a rebuild starts a new generation, before anything is
    written to it. A new epoch replaces the view in every store, so the
    rebuild must cover every sink of the view (no ``--sink``).

    Raises:
        FatalError: a new epoch is needed and ``sinks`` are not all the view's.
    """
    missing = sorted(set(view.cfg.sinks) - set(sinks))

    def whole_view() -> None:
        if missing:
            raise FatalError(
                f"view {view.name} needs a new epoch, which replaces it in every "
                f"store: rebuild it without --sink (missing: {', '.join(missing)})"
            )

    # Snapshot versions start a new epoch with an xmax mark; stream-position
    # versions with a new topic layout.
    begin = _begin_aggregate if view.rereads else _begin_table
    return begin(cfg, view, whole_view)


def adopt(cfg: Config, view: View) -> None:
    """Give ``view`` the recorded epoch (and start offsets) the workers use."""
    known = layout.load(cfg)
    view.use_epoch(known.epochs().get(view.name, 0), known.starts().get(view.name, {}))


def _begin_aggregate(cfg: Config, view: View, whole_view: Callable[[], None]) -> bool:
    mark = layout.load(cfg).marks.get(view.name)
    current = layout.current_xmax(cfg)
    if mark is None or mark.xmax <= current:
        return False
    whole_view()
    new = layout.XmaxMark(view.name, mark.epoch + 1, current)
    layout.write(cfg, [new])
    logger.info(
        "new view epoch view=%s epoch=%d (source xmax %d below %d)",
        view.name,
        new.epoch,
        current,
        mark.xmax,
    )
    return True


def _begin_table(cfg: Config, view: View, whole_view: Callable[[], None]) -> bool:
    guard = layoutguard.Guard(cfg, [view.name])
    guard.recorded = layout.load(cfg)
    topic = cfg.source.topic(view.cfg.table)
    moved = bool(guard.layout_problems())
    if not moved and not _drops_records(cfg, topic):
        return False
    whole_view()
    if moved:
        restart_connector(cfg)
    described = layout.describe(cfg, [topic])
    if topic not in described:
        raise FatalError(f"topic {topic} of view {view.name} does not exist")
    topic_id, parts = described[topic]
    starts = fill.end_offsets(cfg, topic, parts)
    epoch = guard.recorded.epochs().get(view.name, 0) + 1
    lay = layout.TopicLayout(
        view.name, topic, topic_id, parts, epoch, {str(p): o for p, o in starts.items()}
    )
    # The signal before the record: a rebuild killed in between starts over
    # (a new S, a new signal); once recorded, the epoch's rows are on their way.
    send_signal(cfg, view.cfg.table, None)
    layout.write(cfg, [lay])
    logger.info(
        "new view epoch view=%s topic=%s epoch=%d partitions=%d starts=%s",
        view.name,
        topic,
        epoch,
        parts,
        starts,
    )
    return True


def _drops_records(cfg: Config, topic: str) -> bool:
    """Whether ``topic``'s ``cleanup.policy`` includes ``delete``: it drops
    the records of rows that did not change within its retention, and the
    records of deletes a worker fell behind (:mod:`pipeline.gaps`), so a
    replay from its start would bring part of the rows and keep rows deleted
    at the source. A new epoch takes every row from the source instead."""
    policy = replay.dropping_policy(cfg, topic)
    if policy is not None:
        logger.info(
            "new view epoch needed: topic %s has cleanup.policy %s", topic, policy
        )
    return policy is not None


def restart_connector(cfg: Config, timeout_s: float = 120.0) -> None:
    """Stop the connector and resume it: its producer then uses the topics'
    current layout."""
    client = debezium.ConnectClient.of(cfg.connect)
    name = cfg.connect.connector
    client.request("PUT", f"/connectors/{name}/stop")
    deadline = time.monotonic() + timeout_s
    while debezium.status(cfg).get("state") != "STOPPED":
        if time.monotonic() > deadline:
            raise FatalError(f"connector {name} did not stop within {timeout_s:.0f}s")
        time.sleep(0.5)
    client.request("PUT", f"/connectors/{name}/resume")
    debezium.wait_running(cfg, timeout_s)


def await_fill(cfg: Config, view: View, timeout_s: float = FILL_TIMEOUT_S) -> None:
    """Wait until every row of a table view's table has an event at or past its
    epoch's start offsets (the new epoch's incremental snapshot is through);
    after ``timeout_s`` it warns and goes on: the live workers still write the
    late rows."""
    if view.starts:  # a new epoch of stream positions
        fill.await_rows(cfg, view.name, view.cfg.table, view.starts, timeout_s)
