"""The one protocol every read store implements, and helpers all sinks share.

A sink owns only its store: it writes batches of document operations with the
version guard (docs/design.md: the version rule) and reads documents back.
Ordering, retries and offset commits belong to the worker loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast, runtime_checkable

from pipeline.errors import (
    BadRecord,
    ConfigError,
    FatalError,
    ReadsideError,
    TransientError,
)
from pipeline.events import UNCHANGED, Delete, Document, DocumentOp, Upsert
from pipeline.fieldtypes import Shape
from pipeline.sinktypes import SinkConfig

C = TypeVar("C", bound=SinkConfig)


@dataclass(frozen=True, slots=True)
class Stored:
    """A document as a store holds it: its version, and its body or ``None``
    for a tombstone."""

    version: int
    doc: Document | None


@dataclass(slots=True)
class WriteResult:
    """What happened to one batch.

    Attributes:
        applied: operations that changed the store.
        stale: operations the version guard skipped (an equal or newer version
            was already stored). Not an error: replays produce them.
        rejected: operations the store refused for a reason that retrying
            cannot fix (e.g. a mapping conflict), with that reason. The worker
            dead-letters their source records.
    """

    applied: int = 0
    stale: int = 0
    rejected: list[tuple[DocumentOp, str]] = field(default_factory=list)

    def merge(self, other: WriteResult) -> None:
        self.applied += other.applied
        self.stale += other.stale
        self.rejected.extend(other.rejected)


@dataclass(frozen=True, slots=True)
class ViewTarget:
    """Where one view lives in one store.

    Attributes:
        view: the view's name.
        name: the index (Elasticsearch), collection (MongoDB) or key prefix
            (Redis) of the view in this store.
        options: sink-specific settings of this view (TTL, secondary indexes,
            mappings, routing field, ...).
        shape: reads what the view's document fields hold, from the source's
            catalog (:mod:`pipeline.aggregate.shape`), when a store derives
            its native types; ``None``: not known (the store maps nothing).
            It may raise ``TransientError`` (source down) or ``ConfigError``.
        transformed: whether transforms run on the view's documents before
            they reach the store: then their fields may differ from the shape
            (a transform may rename or drop a column, or add a field).
    """

    view: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    shape: Callable[[], Shape] | None = field(default=None, compare=False, repr=False)
    transformed: bool = False

    def fields(self) -> Shape:
        """The view's shape (:attr:`shape`), or an empty one when not known."""
        return {} if self.shape is None else self.shape()

    def renamed(self, name: str) -> ViewTarget:
        """The same view and options at another place (a generation)."""
        return ViewTarget(self.view, name, self.options, self.shape, self.transformed)


def refuse_reserved(
    sink: str, store: str, target: ViewTarget, reserved: Mapping[str, str]
) -> bool:
    """Refuse, when a sink opens, a view whose documents would carry a field
    its store keeps for itself (``reserved``: each name with what the store
    keeps in it), naming the view, the column and the two ways out.

    Without it such a column failed far from its cause: Elasticsearch's index
    creation with its own "Field [_id] is defined more than once", naming no
    view; MongoDB dead-lettered every row of the view. Only the top level is
    checked (a nested level's ``_id`` is an ordinary field in both stores).
    A view with transforms is not checked here: a transform may rename the
    column, and a document that still carries the field is refused as a bad
    record when written. Nor is it when the source cannot be read now: the
    worker need not wait for PostgreSQL to drain Kafka, and the write's own
    refusal stands behind it.

    Returns:
        False when the source could not be read (nothing was checked).

    Raises:
        ConfigError: a top-level field of the view's shape is reserved.
    """
    if target.transformed:
        return True
    try:
        shape = target.fields()
    except TransientError:
        return False
    taken = [name for name in shape if name in reserved]
    if not taken:
        return True
    name = taken[0]
    view = target.view
    raise ConfigError(
        f"views.{view}: its documents would carry the field {name!r}, which "
        f"sinks.{sink} ({store}) keeps for {reserved[name]}; leave the column out "
        f"(views.{view}.exclude: [{name}]) or give it another name (a table "
        f"view: transforms: [{{type: rename, fields: {{{name}: another}}}}]; "
        f"an aggregate view: rename: {{{name}: another}})"
        + (f" (also reserved there: {', '.join(taken[1:])})" if taken[1:] else "")
    )


@runtime_checkable
class Sink(Protocol):
    """A read store that holds the documents of one or more views."""

    name: str

    def open(self) -> None:
        """Connect and prepare targets (indexes, collections, scripts).

        Called once before the first write. Must be idempotent: a restarted
        worker calls it again on existing targets.

        Raises:
            TransientError: the store is not reachable yet.
            FatalError: credentials or settings are wrong.
        """

    def write(self, ops: Sequence[DocumentOp]) -> WriteResult:
        """Apply a batch of upserts and deletes, each guarded by its version.

        Operations are for distinct documents (the worker coalesces first).
        An upsert or delete is applied only if no newer version is stored;
        a delete leaves a tombstone at its version so that an older upsert
        arriving later cannot bring the document back. ``UNCHANGED`` values
        are filled from the stored document before writing.

        Must be idempotent: the worker replays a batch after any failure.

        Raises:
            TransientError: nothing or part of the batch was applied; the
                worker retries the whole batch.
            FatalError: retrying cannot help.
        """
        ...

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        """Read stored documents (and tombstones) of ``view`` by id.

        Ids that the store does not know are absent from the result.
        """
        ...

    def ids(self, view: str) -> set[str]:
        """Ids of every live (not deleted) document of ``view``."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""


@runtime_checkable
class Generations(Protocol):
    """A sink that can hold a view in numbered generations, for rebuilds.

    Generation 1 is where a view lives from its first write (the plain index
    alias, collection or key prefix). ``readside snapshot VIEW --rebuild``
    fills generation n+1 beside the live one through a *pinned* sink (built
    with :meth:`generation_target`), then :meth:`switch_generation` makes it
    the live one for every writer and reader at once, and the old one is
    dropped. Writers and readers resolve the live generation at each call, so
    a write of records consumed after the switch lands in the new one.

    From :meth:`create_generation` to the switch, every write of the live
    sinks is *mirrored*: applied to generation n+1 first, then to the live
    generation n, with the generations resolved after the records were
    consumed. So whatever n holds, n+1 holds at the same or a newer version
    (the rebuild's catch-up brings what was written before the mirroring
    began), and the switch never takes a reader back in time.
    """

    def generation(self, view: str) -> int:
        """The live generation of ``view`` (1 when never switched)."""
        ...

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        """The target that writes and reads generation ``gen`` directly."""
        ...

    def create_generation(self, view: str, gen: int) -> None:
        """Make generation ``gen`` exist and be empty (leftovers are removed),
        and mirror every later write of ``view`` into it until the switch."""
        ...

    def switch_generation(self, view: str, gen: int) -> None:
        """Atomically make ``gen`` the live generation of ``view`` and end the
        mirroring."""
        ...

    def drop_generation(self, view: str, gen: int) -> None:
        """Delete what generation ``gen`` holds (never the live one)."""
        ...


@runtime_checkable
class LoadMarks(Protocol):
    """A sink that marks the views it holds whole (:mod:`pipeline.loaded`).

    The mark lives beside the view's documents, so that whatever loses them
    loses the mark too: a Redis emptied or restarted without its data, an
    Elasticsearch index deleted, a MongoDB collection or database dropped. A
    view whose mark is missing while its consumer group has committed offsets
    holds only what was written since: its earlier documents are gone (or the
    sink was added to the view after those offsets, and never loaded).
    """

    def loaded(self, view: str) -> bool:
        """Whether the live generation of ``view`` carries the mark."""
        ...

    def mark_loaded(self, view: str) -> None:
        """Mark the live generation of ``view`` as holding the whole view (a
        first start streams it whole; a snapshot or a rebuild loaded it). A
        mark already there is left as it was."""
        ...

    def unmark(self, view: str) -> None:
        """Take the mark of ``view`` away: the store lacks changes the stream
        no longer holds (:mod:`pipeline.gaps`), so only a rebuild from the
        source makes it whole again. The documents stay."""
        ...


def mark_time() -> str:
    """What a load mark holds: when it was set (UTC, ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SinkKind(Generic[C]):
    """One kind of store: what the entry point of ``readside.sinks`` names
    (:mod:`pipeline.sinktypes`), as ``KIND`` in the store's module.

    Attributes:
        name: the ``type:`` of its entries in ``sinks:``.
        config: its config model (``type: Literal["<type>"]`` and settings).
        sink: builds the (unopened) sink from its name, settings and targets,
            and must not connect; or ``"module:attribute"`` naming it, imported
            when the first sink is built (so that validating a configuration
            does not import the store's driver).
    """

    name: str
    config: type[C]
    sink: Callable[[str, C, Mapping[str, ViewTarget]], Sink] | str

    def build(
        self, name: str, cfg: SinkConfig, targets: Mapping[str, ViewTarget]
    ) -> Sink:
        """The sink ``name``; ``cfg`` must be of :attr:`config`.

        Raises:
            ConfigError: ``cfg`` is the settings of another kind.
        """
        if not isinstance(cfg, self.config):
            raise ConfigError(f"sinks.{name}: not a {self.name} sink ({cfg.type})")
        return self.factory()(name, cfg, targets)

    def factory(self) -> Callable[[str, C, Mapping[str, ViewTarget]], Sink]:
        """What builds the sinks of this kind (imported now if named)."""
        if not isinstance(self.sink, str):
            return self.sink
        module, _, attr = self.sink.partition(":")
        found: Callable[[str, C, Mapping[str, ViewTarget]], Sink]
        found = getattr(importlib.import_module(module), attr)
        return found


class StoreSink(Generic[C]):
    """What the sinks share: their name, settings and targets, the write
    template and the refusal to touch a live generation.

    A store's sink sets :attr:`store` and :attr:`driver_errors`, implements
    :meth:`_write_ready`, ``fetch``, ``ids``, ``open`` and ``close`` (and
    :class:`Generations` if it can), and maps its driver's errors in
    :meth:`classify`.
    """

    #: the store's name in messages ("redis sink cache: ...")
    store: ClassVar[str]
    #: the driver's exceptions that :meth:`classify` maps
    driver_errors: ClassVar[tuple[type[Exception], ...]] = ()
    #: the top-level fields the store keeps for itself, each with what it
    #: keeps there (:meth:`check_reserved`)
    reserved: ClassVar[Mapping[str, str]] = {}

    def __init__(self, name: str, cfg: C, targets: Mapping[str, ViewTarget]) -> None:
        self.name = name
        self.cfg = cfg
        self.targets = dict(targets)

    def reserved_refusals(self) -> list[ConfigError]:
        """The refusal of each view whose documents would carry one of
        :attr:`reserved` (:func:`refuse_reserved`), for ``readside config
        check`` and :meth:`check_reserved`. The views after one whose source
        cannot be read are not checked: none waits on it again."""
        refused: list[ConfigError] = []
        for target in self.targets.values():
            try:
                if not refuse_reserved(self.name, self.store, target, self.reserved):
                    break
            except ConfigError as exc:
                refused.append(exc)
        return refused

    def check_reserved(self) -> None:
        """Refuse the first view :meth:`reserved_refusals` finds; the store's
        ``open`` calls it.

        Raises:
            ConfigError: naming the view and the column.
        """
        refused = self.reserved_refusals()
        if refused:
            raise refused[0]

    @staticmethod
    def classify(exc: Exception) -> ReadsideError:
        """Map a driver exception onto a readside error class, by type."""
        return exc if isinstance(exc, ReadsideError) else FatalError(str(exc))

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        raise NotImplementedError

    def write(self, ops: Sequence[DocumentOp]) -> WriteResult:
        """The :meth:`Sink.write` template: fill ``UNCHANGED`` values from the
        store, write the rest (:meth:`_write_ready`), map driver errors."""
        try:
            ready, result = fill_unchanged(ops, self.fetch)
            return self._write_ready(ready, result)
        except self.driver_errors as exc:
            raise self.classify(exc) from exc

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        """Write ``ready`` (no ``UNCHANGED`` left), adding to ``result``."""
        raise NotImplementedError

    def _target(self, view: str) -> ViewTarget:
        try:
            return self.targets[view]
        except KeyError:
            raise FatalError(
                f"{self.store} sink {self.name}: unknown view {view!r}"
            ) from None

    def _refuse_live(self, view: str, gen: int, what: str) -> None:
        """Refuse to create or drop generation ``gen`` while it is live."""
        if cast("Generations", self).generation(view) == gen:
            raise FatalError(
                f"{self.store} sink {self.name}: will not {what} generation {gen} "
                f"of view {view}: it is the live one"
            )


def mirrored(mirror: WriteResult, live: WriteResult) -> WriteResult:
    """The result of a write applied to a mirrored generation, then the live
    one: the live counts, and the rejections of both (a document the new
    generation refuses would be missing once it is switched in)."""
    known = {id(op) for op, _why in live.rejected}
    live.rejected.extend(r for r in mirror.rejected if id(r[0]) not in known)
    return live


def fill_unchanged(
    ops: Iterable[DocumentOp],
    fetch: Callable[[str, Sequence[str]], Mapping[str, Stored]],
) -> tuple[list[DocumentOp], WriteResult]:
    """Replace ``UNCHANGED`` values of upserts with the stored values.

    Every sink calls it first in ``write``. Returns the ops ready to write
    (none of them holds ``UNCHANGED``) and a result that already counts the
    ops settled here: stale ones (a version at least as new is stored) and
    rejected ones (the store does not hold the value, with the reason).
    """
    ready: list[DocumentOp] = []
    settled = WriteResult()
    rejected = settled.rejected
    pending: dict[str, list[Upsert]] = {}
    for op in ops:
        if isinstance(op, Upsert) and op.has_unchanged:
            pending.setdefault(op.view, []).append(op)
        else:
            ready.append(op)
    for view, ups in pending.items():
        stored = fetch(view, [u.doc_id for u in ups])
        for up in ups:
            have = stored.get(up.doc_id)
            missing = [
                f
                for f in up.unchanged_fields
                if have is None or have.doc is None or f not in have.doc
            ]
            if have is not None and have.version >= up.version:
                settled.stale += 1  # versions never go back: the guard would skip it
                continue
            if missing:
                rejected.append(
                    (
                        up,
                        "unchanged TOAST column(s) "
                        f"{', '.join(missing)} not held by the store; use REPLICA "
                        "IDENTITY FULL on the table or re-snapshot the view",
                    )
                )
                continue
            assert have is not None
            assert have.doc is not None
            doc = {k: (have.doc[k] if v is UNCHANGED else v) for k, v in up.doc.items()}
            ready.append(
                Upsert(
                    up.view,
                    up.doc_id,
                    up.version,
                    doc,
                    up.lsn,
                    up.commit_ts_ms,
                    up.position,
                )
            )
    return ready, settled


def check_no_unchanged(doc: Document) -> None:
    """Guard used by sinks right before serializing a document."""
    for key, value in doc.items():
        if value is UNCHANGED:
            raise BadRecord("toast", f"field {key!r} still holds the unchanged marker")


def version_of(op: DocumentOp) -> int:
    return op.version


def is_delete(op: DocumentOp) -> bool:
    return isinstance(op, Delete)
