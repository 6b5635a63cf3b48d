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

The source's columns are part of it too. A migration adds a column (with a
default PostgreSQL fills in without a change of any row), drops one, or
changes a column's type, and no record of the rows it does not touch goes
through the stream: their documents keep the former columns, for good. So a
definition holds, per table the view reads, its columns, each with the field
type its values are written as (:func:`columns`), read from the source's
catalog when the definition is recorded and when it is compared; of those,
the columns the view's documents take are compared (:func:`taken`: a column
its ``fields`` leave out may come and go). A table view's load is
then ``--from-source`` (a replay of the topic would bring back the former
records); an aggregate view's, its chunked load (a worker compiles the view
again before it reads it once its tables' columns changed:
:meth:`~pipeline.aggregate.AggregateView.columns_moved`). A record made before the
columns were part of it is given the columns the worker reads at its next
check; a source that cannot be read leaves the columns out of the
comparison. An enum column's type holds its labels: a label renamed
(``ALTER TYPE ... RENAME VALUE``) or dropped changes what rows read without
a change of any row; a label added changes none.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import psycopg

from pipeline import checkpoints, kafkaclient
from pipeline.aggregate.catalog import Catalog
from pipeline.config import Config
from pipeline.errors import ConfigError, TransientError
from pipeline.focusconfig import derived_name
from pipeline.metrics import DEFINITION_CHANGED
from pipeline.viewconfig import (
    AggregateViewConfig,
    RelationConfig,
    TableViewConfig,
    ViewConfig,
)

logger = logging.getLogger(__name__)

#: seconds between two reads of the recorded definitions while the worker runs
CHECK_INTERVAL_S = 60.0
#: seconds between two error lines about the same pair
REPEAT_S = 600.0
#: settings outside a view's definition of its documents: where they go
EXCLUDED = frozenset({"sinks", "sink_options"})
#: the settings that choose a view's rows
SLICE = frozenset({"where", "filter"})

#: how a definition's key for the columns one table gives the documents
#: begins (its value: the columns and their field types, as JSON)
COLUMNS = "columns of "
#: seconds a connection to the source waits to be made
CONNECT_TIMEOUT_S = 5

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


def _levels(vc: ViewConfig) -> Iterator[tuple[str, list[str] | None, list[str]]]:
    """Each table the view's documents take columns of, with the columns
    chosen (``None``: all) and those left out."""
    if isinstance(vc, TableViewConfig):
        yield vc.table, vc.fields, vc.exclude
        return

    def walk(
        table: str, level: AggregateViewConfig | RelationConfig
    ) -> Iterator[tuple[str, list[str] | None, list[str]]]:
        value = level.value if isinstance(level, RelationConfig) else None
        yield table, [value] if value else level.fields, level.exclude
        for rel in level.embed.values():
            yield from walk(rel.table, rel)

    yield from walk(vc.table, vc)


def columns(conn: psycopg.Connection[Any], vc: ViewConfig) -> Definition:
    """Per table ``vc`` reads, its columns, each with the field type its
    values are written as: ``{"columns of public.t": '{"id": "integer",
    "tags": "text[]"}'}`` (all of them: :func:`taken` keeps those the view's
    documents take when definitions are compared). A table the source lacks
    is left out (the worker's start and the loads name it)."""
    catalog = Catalog(conn)
    out: Definition = {}
    for table in sorted({table for table, _f, _e in _levels(vc)}):
        try:
            info = catalog.table(table, "source")
        except ConfigError:
            continue
        labels = {
            str(name): list(values)
            for name, values in conn.execute(_ENUM_LABELS, (table,)).fetchall()
        }
        cols = {}
        for name, col in info.columns.items():
            ft = col.field_type
            scale = "" if ft.scale is None else f"({ft.scale})"
            cols[name] = f"{ft.kind}{scale}{'[]' if ft.array else ''}"
            if ft.kind == "enum" and name in labels:
                cols[name] += " " + json.dumps(labels[name])
        out[COLUMNS + table] = json.dumps(cols, sort_keys=True)
    return out


#: The labels of each enum column of a table (an array's, a domain's too),
#: in their order.
_ENUM_LABELS = """
SELECT a.attname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_enum e ON e.enumtypid IN (t.oid, t.typelem, t.typbasetype)
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
GROUP BY a.attname
"""


def _enum(kind: str) -> tuple[str, list[str] | None]:
    """A recorded column type split into its type and, for an enum whose
    labels were recorded, its labels."""
    head, _, labels = kind.partition(" ")
    return (head, json.loads(labels)) if labels else (kind, None)


def _type_change(before: str, now: str) -> str | None:
    """What changed of one column's recorded type, or None when nothing its
    documents show: an enum that only gained labels (rows keep theirs), or
    whose labels were not recorded then."""
    (was, old), (kind, new) = _enum(before), _enum(now)
    if was != kind:
        return f"{before} -> {now}"
    if old is None or new is None:
        return None
    gone = [label for label in old if label not in new]
    if not gone:
        return None
    return f"enum label(s) {', '.join(gone)} renamed or dropped"


def taken(vc: ViewConfig, definition: Definition) -> Definition:
    """``definition`` with, of each table's columns, only those ``vc``'s
    documents take (``fields`` and ``exclude`` as the config says now, so
    that a column the config leaves out, or one a migration adds that it
    does not take, is no change of the source)."""
    keep: dict[str, set[str]] = {}
    for table, fields, exclude in _levels(vc):
        key = COLUMNS + table
        if key in definition:
            names = set(json.loads(definition[key]))
            chosen = {n for n in names if fields is None or n in fields}
            keep.setdefault(key, set()).update(chosen - set(exclude))
    out = dict(definition)
    for key, names in keep.items():
        cols = json.loads(definition[key])
        out[key] = json.dumps(
            {n: t for n, t in cols.items() if n in names}, sort_keys=True
        )
    return out


def source_columns(cfg: Config, views: Iterable[str]) -> dict[str, Definition] | None:
    """:func:`columns` of each of ``views``, read from the source now; None
    (and a warning) when it cannot be read."""
    vcs = cfg.effective_views()
    dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
    try:
        with psycopg.connect(
            dsn, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
        ) as conn:
            return {view: columns(conn, vcs[view]) for view in views}
    except psycopg.Error as exc:
        logger.warning("view columns not read from the source error=%s", exc)
        return None


def _columns_changed(table: str, before: str, now: str) -> str | None:
    """``columns of T (note added; name dropped; qty integer -> bigint;
    status enum label(s) open renamed or dropped)``; None when nothing the
    documents show changed."""
    was, cols = json.loads(before), json.loads(now)
    said = [f"{c} added" for c in cols if c not in was]
    said += [f"{c} dropped" for c in was if c not in cols]
    for c in cols:
        if c in was and was[c] != cols[c]:
            change = _type_change(was[c], cols[c])
            if change is not None:
                said.append(f"{c} {change}")
    return f"{COLUMNS}{table} ({'; '.join(said)})" if said else None


def changed(recorded: Definition, now: Definition) -> list[str]:
    """The settings whose value differs (or that one side lacks); the
    columns of a table only where both sides know them, each with what
    changed."""
    out = []
    for key in sorted(recorded.keys() | now.keys()):
        if key.startswith(COLUMNS):
            if key in recorded and key in now and recorded[key] != now[key]:
                table = key.removeprefix(COLUMNS)
                said = _columns_changed(table, recorded[key], now[key])
                if said is not None:
                    out.append(said)
        elif recorded.get(key) != now.get(key):
            out.append(key)
    return out


def differs(vc: ViewConfig, recorded: Definition, now: Definition) -> list[str]:
    """:func:`changed` of the columns ``vc``'s documents take (:func:`taken`)."""
    return changed(taken(vc, recorded), taken(vc, now))


def problem(cfg: Config, view: str, sink: str, settings: Iterable[str]) -> str:
    """What to say of a pair whose definition changed, with the way out."""
    vc = cfg.effective_views()[view]
    settings = list(settings)
    names = {s for s in settings if not s.startswith(COLUMNS)}
    source = len(names) < len(settings)
    focus = next(
        (f for f, fc in cfg.focuses.items() if derived_name(fc.view, f) == view), None
    )
    if focus is not None and names <= SLICE and not source:
        load = f"readside focus apply {focus}"
    elif source and isinstance(vc, TableViewConfig):
        # the rows read again, through the stream: the topic holds the
        # former columns of every row the migration did not touch
        load = f"readside snapshot {view} --from-source"
        if names & SLICE:
            load = f"readside snapshot {view} --rebuild --sink {sink}, then {load}"
    elif isinstance(vc, TableViewConfig) or names & SLICE:
        load = f"readside snapshot {view} --rebuild --sink {sink}"
    else:  # every document at a newer version, the same rows (the workers
        # compile the view again before their next read of it)
        load = f"readside snapshot {view} --sink {sink}"
    what = "its definition" if names else "the source's columns"
    return (
        f"view {view} in sink {sink}: {what} changed ({', '.join(settings)}) "
        "since its documents were written whole; the document of every row that "
        f"has not changed since follows the former one. Rewrite them: {load}"
    )


def changes(
    cfg: Config,
    recorded: Mapping[Pair, Definition],
    source: Mapping[str, Definition] | None = None,
) -> dict[Pair, list[str]]:
    """The settings changed of every pair of the config recorded with
    another definition; with ``source`` (:func:`source_columns`), the
    columns of their tables too."""
    out: dict[Pair, list[str]] = {}
    for view, vc in sorted(cfg.effective_views().items()):
        now = {**of(vc), **(source or {}).get(view, {})}
        for sink in vc.sinks:
            before = recorded.get((view, sink))
            settings = [] if before is None else differs(vc, before, now)
            if settings:
                out[(view, sink)] = settings
    return out


def problems(
    cfg: Config,
    recorded: Mapping[Pair, Definition],
    source: Mapping[str, Definition] | None = None,
) -> list[str]:
    """:func:`problem` of every pair of the config recorded with another
    definition (``readside status``)."""
    return [
        problem(cfg, *pair, s) for pair, s in changes(cfg, recorded, source).items()
    ]


def record(
    cfg: Config,
    view: str,
    sinks: Iterable[str],
    columns: Mapping[str, Definition] | None = None,
) -> None:
    """Record that ``sinks`` hold every document of ``view`` as it is
    defined now (a load that rewrote them all): with the source's
    ``columns`` (:func:`source_columns`) the load compiled against, read
    before it began, else those of now. A migration during the load is then
    said after it, as any other.

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
    if columns is None or view not in columns:
        columns = source_columns(cfg, [view])
    cols = (columns or {}).get(view, {})
    now = {**of(cfg.effective_views()[view]), **cols}
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
        self.views = views
        self.now = {pair: of(views[pair[0]]) for pair in pairs}
        self.clock = clock
        #: the source's columns of each view (None: not read)
        self.read_columns: Callable[[], Mapping[str, Definition] | None] = lambda: (
            source_columns(cfg, sorted({v for v, _s in self.now}))
        )
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
        self.take(found, self.read_columns())

    def take(
        self,
        found: Mapping[Pair, Definition],
        source: Mapping[str, Definition] | None = None,
    ) -> None:
        """Compare the definitions ``found`` on the topic with the config's
        and ``source``'s columns (:func:`source_columns`)."""
        now = self.clock()
        for pair, config in self.now.items():
            view, sink = pair
            definition = {**config, **(source or {}).get(view, {})}
            before = found.get(pair)
            if before is None:
                if self.recorder is not None:
                    self.recorder.definition(view, sink, definition)
                continue
            # Recorded before the columns were part of a definition (or a
            # table the source lacked then): from now on they are. And
            # columns that changed in nothing the documents show (an enum's
            # label added, a column they do not take) are recorded as they
            # are now, so that a later change of them is seen.
            refresh = {k for k in definition if k.startswith(COLUMNS)} - before.keys()
            settings = differs(self.views[view], before, definition)
            if not settings:
                refresh |= {
                    k
                    for k in definition
                    if k.startswith(COLUMNS)
                    and before.get(k, definition[k]) != definition[k]
                }
            if refresh and self.recorder is not None:
                self.recorder.definition(
                    view, sink, {**before, **{k: definition[k] for k in refresh}}
                )
            DEFINITION_CHANGED.labels(view=view, sink=sink).set(1 if settings else 0)
            if not settings:
                if self.said.pop(pair, None) is not None:
                    logger.info("view %s in sink %s: definition rewritten", *pair)
                continue
            last = self.said.get(pair)
            if last is None or now - last >= REPEAT_S:
                self.said[pair] = now
                logger.error(problem(self.cfg, view, sink, settings))
