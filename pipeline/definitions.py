"""Whether a store's documents of a view follow the view's definition now.

A view's definition is edited in the config (a field added to ``fields``,
a column excluded, a transform added or given other options, a relation
embedded) and the workers are restarted with it. From then on every change
is written by the new definition, but the document of every row that has
not changed since keeps the former one, for good, while the lag reads zero:
the stores serve two definitions at once and nothing says so.

So the checkpoint topic records, per view and sink, the definition the
sink's documents were last written whole by (:func:`of`: a digest of each
of its settings, so that a transform's options are not kept in clear):

* a worker records the definition of a pair that has no record (its first
  start: the stream brings every row; or a view or sink new to it);
* a load that rewrites every document records the definition it wrote by:
  ``readside snapshot VIEW --rebuild``, the chunked load of an aggregate view
  (``readside snapshot VIEW``, every document at a newer snapshot version),
  and ``--from-source`` on a table view (every row again through the stream,
  at new offsets, once Debezium's incremental snapshot is through).

A replay of a table view's topic does not: the stores refuse its records'
versions, which they hold already. ``readside focus apply`` records the
definition of its focus's view once applied (signalled, for a table view).
Not recorded, and so not seen: a transform's code changed under the same name
and options, and a sink's own options (mappings; ``--rebuild`` applies them).

A view's slice (``where``, ``filter``, and so a focus's ``where``) is part of
its definition: a narrower one leaves documents of rows it no longer
includes, a wider one lacks the rows that did not change since. A load
that writes the new slice does not remove the former's documents, so the
way out is ``--rebuild`` (a new generation), or ``focus apply`` (a load of
what the slice adds and a purge of what it drops) for a focus whose only
change is its slice.

:class:`Watch` compares at the worker's start and every
:data:`CHECK_INTERVAL_S`: a pair whose definition changed is logged as an
error naming the settings and the load that rewrites it (again every
:data:`REPEAT_S`), and shown by the gauge
``readside_view_definition_changed{view,sink}``; ``readside status`` and the
status page warn the same way. The worker goes on: what it writes follows
the definition now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from pipeline import checkpoints, kafkaclient
from pipeline.config import Config
from pipeline.errors import TransientError
from pipeline.focusconfig import derived_name
from pipeline.metrics import DEFINITION_CHANGED
from pipeline.viewconfig import TableViewConfig, ViewConfig

logger = logging.getLogger(__name__)

#: seconds between two reads of the recorded definitions while the worker runs
CHECK_INTERVAL_S = 60.0
#: seconds between two error lines about the same pair
REPEAT_S = 600.0
#: settings outside a view's definition of its documents: where they go
EXCLUDED = frozenset({"sinks", "sink_options"})
#: the settings that choose a view's rows
SLICE = frozenset({"where", "filter"})

#: a setting's name -> a digest of its value
Definition = dict[str, str]
Pair = tuple[str, str]  # (view, sink)


def of(vc: ViewConfig) -> Definition:
    """The definition of ``vc``'s documents, setting by setting."""
    data = vc.model_dump(mode="json", exclude=set(EXCLUDED), exclude_defaults=True)
    return {
        key: hashlib.sha256(
            json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:16]
        for key, value in sorted(data.items())
    }


def changed(recorded: Definition, now: Definition) -> list[str]:
    """The settings whose value differs (or that one side lacks)."""
    return sorted(
        k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k)
    )


def problem(cfg: Config, view: str, sink: str, settings: Iterable[str]) -> str:
    """What to say of a pair whose definition changed, with the way out."""
    vc = cfg.effective_views()[view]
    names = set(settings)
    focus = next(
        (f for f, fc in cfg.focuses.items() if derived_name(fc.view, f) == view), None
    )
    if focus is not None and names <= SLICE:
        load = f"readside focus apply {focus}"
    elif isinstance(vc, TableViewConfig) or names & SLICE:
        load = f"readside snapshot {view} --rebuild --sink {sink}"
    else:  # every document at a newer version, the same rows
        load = f"readside snapshot {view} --sink {sink}"
    return (
        f"view {view} in sink {sink}: its definition changed ({', '.join(settings)}) "
        "since its documents were written whole; the document of every row that "
        f"has not changed since follows the former one. Rewrite them: {load}"
    )


def changes(cfg: Config, recorded: Mapping[Pair, Definition]) -> dict[Pair, list[str]]:
    """The settings changed of every pair of the config recorded with
    another definition."""
    out: dict[Pair, list[str]] = {}
    for view, vc in sorted(cfg.effective_views().items()):
        now = of(vc)
        for sink in vc.sinks:
            before = recorded.get((view, sink))
            settings = [] if before is None else changed(before, now)
            if settings:
                out[(view, sink)] = settings
    return out


def problems(cfg: Config, recorded: Mapping[Pair, Definition]) -> list[str]:
    """:func:`problem` of every pair of the config recorded with another
    definition (``readside status``)."""
    return [problem(cfg, *pair, s) for pair, s in changes(cfg, recorded).items()]


def record(cfg: Config, view: str, sinks: Iterable[str]) -> None:
    """Record that ``sinks`` hold every document of ``view`` as it is
    defined now (a load that rewrote them all).

    Raises:
        TransientError: Kafka did not acknowledge it.
    """
    topic = cfg.kafka.checkpoint_topic
    # a load may run before any worker made the topic (a broker that does
    # not create topics on first use would hold the record back for good)
    checkpoints.ensure_topics(
        kafkaclient.admin(cfg.kafka), [(topic, 1, True)], cfg.kafka.replication_factor
    )
    producer = kafkaclient.producer(cfg.kafka)
    writer = checkpoints.CheckpointWriter(producer, topic)
    now = of(cfg.effective_views()[view])
    for sink in sinks:
        writer.definition(view, sink, now)
    if producer.flush(30) != 0:
        raise TransientError("definition record not acknowledged by Kafka in 30s")
    logger.info("definition recorded view=%s sinks=%s", view, ",".join(sinks))


class Watch:
    """The worker's look at the definitions its views' documents follow."""

    def __init__(
        self,
        cfg: Config,
        pairs: Iterable[Pair],
        recorder: checkpoints.CheckpointWriter | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.recorder = recorder
        views = cfg.effective_views()
        self.now = {pair: of(views[pair[0]]) for pair in pairs}
        self.clock = clock
        #: pairs whose definition changed, with when their error was last logged
        self.said: dict[Pair, float] = {}
        self._next = 0.0

    def due(self) -> bool:
        return self.clock() >= self._next

    def check(self) -> None:
        """Read the recorded definitions and compare; record those of pairs
        without one. Kafka not answering is a warning (asked again next time).
        """
        self._next = self.clock() + CHECK_INTERVAL_S
        try:
            found = checkpoints.read_recorded(
                self.cfg.kafka, self.cfg.kafka.checkpoint_topic, whole=True
            ).definitions
        except TransientError as exc:
            logger.warning("view definitions not read error=%s", exc)
            return
        self.take(found)

    def take(self, found: Mapping[Pair, Definition]) -> None:
        """Compare the definitions ``found`` on the topic with the config's."""
        now = self.clock()
        for pair, definition in self.now.items():
            view, sink = pair
            before = found.get(pair)
            if before is None:
                if self.recorder is not None:
                    self.recorder.definition(view, sink, definition)
                continue
            settings = changed(before, definition)
            DEFINITION_CHANGED.labels(view=view, sink=sink).set(1 if settings else 0)
            if not settings:
                if self.said.pop(pair, None) is not None:
                    logger.info("view %s in sink %s: definition rewritten", *pair)
                continue
            last = self.said.get(pair)
            if last is None or now - last >= REPEAT_S:
                self.said[pair] = now
                logger.error(problem(self.cfg, view, sink, settings))
