"""An in-memory sink with failure knobs, for unit tests of the worker loop.

It keeps the same version rule as the real sinks, so the loop's tests check
convergence exactly as the integration tests do. It is also the sink type
``memory`` (``sinks: {scratch: {type: memory}}``): a store inside one
process, for trials and tests, forgotten when the process ends. Every sink
built from the configuration in one process (the worker's, a read client's,
a rebuild's) uses the same :class:`MemoryStore`, named by ``store`` (default:
the sink's name). It is the smallest example of a store: its config model,
its sink with generations, and its ``KIND``, registered in pyproject.toml
under ``readside.sinks`` (docs/development.md: adding a store).

Generations (:class:`~connectors.base.Generations`): generation 1 of a view
whose target is ``t`` is held under ``t``, generation n > 1 under ``t~n``;
the store records the live generation and the one mirrored into, and every
write and read resolves them under the store's lock.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from connectors.base import (
    SinkKind,
    Stored,
    StoreSink,
    ViewTarget,
    WriteResult,
    mirrored,
)
from pipeline.errors import TransientError
from pipeline.events import Delete, DocumentOp
from pipeline.sinktypes import SinkConfig


class MemorySinkConfig(SinkConfig):
    """The settings of a ``memory`` sink: the store it shares and its failure
    knobs (see :class:`MemorySink`)."""

    type: Literal["memory"]
    store: str | None = None
    fail_prob: float = Field(0.0, ge=0, le=1)
    partial_fail_prob: float = Field(0.0, ge=0, le=1)
    reject_ids: list[str] = Field(default_factory=list)
    seed: int | None = None


class MemoryStore:
    """What one in-memory store holds: ``(target, id) -> Stored`` and, by
    view target, the live generation and the one mirrored into."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Stored] = {}
        self.generations: dict[str, tuple[int, int | None]] = {}
        #: the generations (by name) that carry the load mark
        self.marked: set[str] = set()
        self.lock = threading.Lock()


_SHARED: dict[str, MemoryStore] = {}
_SHARED_LOCK = threading.Lock()


def shared_store(name: str) -> MemoryStore:
    """The store ``name`` of this process (created empty on first use)."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(name, MemoryStore())


def generation_name(base: str, gen: int) -> str:
    """Where generation ``gen`` of a view whose target is ``base`` is held."""
    return base if gen == 1 else f"{base}~{gen}"


class MemorySink(StoreSink[MemorySinkConfig]):
    """A dict of ``(target, id) -> Stored`` behind the :class:`Sink` protocol.

    Args:
        name: the sink's name.
        fail_prob: chance that a ``write`` raises :class:`TransientError`
            before applying anything.
        partial_fail_prob: chance that a ``write`` applies the first half of
            the batch and then raises :class:`TransientError`.
        reject_ids: document ids the store refuses (reported as rejected).
        seed: seed of the knobs' random generator.
        targets: the views it holds; a view without a target is held under
            its own name.
        shared: the store it writes to (default: a store of its own).
    """

    store = "memory"

    def __init__(
        self,
        name: str = "memory",
        *,
        fail_prob: float = 0.0,
        partial_fail_prob: float = 0.0,
        reject_ids: Sequence[str] = (),
        seed: int | None = None,
        targets: Mapping[str, ViewTarget] | None = None,
        shared: MemoryStore | None = None,
    ) -> None:
        cfg = MemorySinkConfig(
            type="memory",
            fail_prob=fail_prob,
            partial_fail_prob=partial_fail_prob,
            reject_ids=list(reject_ids),
            seed=seed,
        )
        super().__init__(name, cfg, targets or {})
        self.fail_prob = fail_prob
        self.partial_fail_prob = partial_fail_prob
        self.reject_ids = set(reject_ids)
        self.down = False
        self.writes = 0
        self._store = shared or MemoryStore()
        self._random = random.Random(seed)  # noqa: S311 (failure knobs, not crypto)
        self._lock = self._store.lock

    @classmethod
    def from_config(
        cls, name: str, cfg: MemorySinkConfig, targets: Mapping[str, ViewTarget]
    ) -> MemorySink:
        """The sink of a ``type: memory`` entry of ``sinks:``."""
        sink = cls(
            name,
            fail_prob=cfg.fail_prob,
            partial_fail_prob=cfg.partial_fail_prob,
            reject_ids=cfg.reject_ids,
            seed=cfg.seed,
            targets=targets,
            shared=shared_store(cfg.store or name),
        )
        sink.cfg = cfg
        return sink

    @property
    def data(self) -> dict[tuple[str, str], Stored]:
        """Every document and tombstone: ``(target, id) -> Stored``."""
        return self._store.data

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _base(self, view: str) -> str:
        target = self.targets.get(view)
        return view if target is None else target.name

    def _state(self, view: str) -> tuple[int, int | None]:
        return self._store.generations.get(self._base(view), (1, None))

    def _live(self, view: str) -> str:
        return generation_name(self._base(view), self._state(view)[0])

    # -- writes -----------------------------------------------------------

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        if self.down or self._random.random() < self.fail_prob:
            raise TransientError(f"sink {self.name} unavailable")
        cut = len(ready)
        partial = self._random.random() < self.partial_fail_prob
        if partial:
            cut = len(ready) // 2
        with self._lock:
            self.writes += 1
            into = WriteResult()
            for op in ready[:cut]:
                live, mirror = self._state(op.view)
                base = self._base(op.view)
                if mirror is not None:
                    self._apply(op, generation_name(base, mirror), into)
                self._apply(op, generation_name(base, live), result)
            result = mirrored(into, result)
        if partial:
            raise TransientError(f"sink {self.name} failed mid-batch")
        return result

    def _apply(self, op: DocumentOp, where: str, result: WriteResult) -> None:
        if op.doc_id in self.reject_ids:
            result.rejected.append((op, "rejected by the memory store"))
            return
        key = (where, op.doc_id)
        have = self.data.get(key)
        if have is not None and have.version >= op.version:
            result.stale += 1
            return
        doc = None if isinstance(op, Delete) else dict(op.doc)
        self.data[key] = Stored(op.version, doc)
        result.applied += 1

    # -- reads ------------------------------------------------------------

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        with self._lock:
            where = self._live(view)
            return {i: self.data[(where, i)] for i in ids if (where, i) in self.data}

    async def afetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        """:meth:`fetch` for a caller on an event loop (a memory read does
        not block): the server reads it as it reads Redis."""
        return self.fetch(view, ids)

    async def aclose(self) -> None:
        """Nothing to close."""

    def ids(self, view: str) -> set[str]:
        with self._lock:
            where = self._live(view)
            return {
                i for (t, i), s in self.data.items() if t == where and s.doc is not None
            }

    def documents(self, view: str) -> dict[str, dict[str, object]]:
        """Live documents of ``view`` by id (a test helper)."""
        with self._lock:
            where = self._live(view)
            return {
                i: dict(s.doc)
                for (t, i), s in self.data.items()
                if t == where and s.doc is not None
            }

    def drop(self, view: str) -> None:
        """Forget every document and tombstone of the live generation of
        ``view`` (tests)."""
        with self._lock:
            self._forget(self._live(view))

    def loaded(self, view: str) -> bool:
        with self._lock:
            return self._live(view) in self._store.marked

    def mark_loaded(self, view: str) -> None:
        with self._lock:
            self._store.marked.add(self._live(view))

    def unmark(self, view: str) -> None:
        with self._lock:
            self._store.marked.discard(self._live(view))

    def _forget(self, where: str) -> None:
        self._store.marked.discard(where)
        for key in [k for k in self.data if k[0] == where]:
            del self.data[key]

    # -- generations --------------------------------------------------------

    def generation(self, view: str) -> int:
        with self._lock:
            return self._state(view)[0]

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        target = self.targets.get(view) or ViewTarget(view, view)
        return target.renamed(generation_name(target.name, gen))

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        with self._lock:
            self._forget(generation_name(self._base(view), gen))
            self._store.generations[self._base(view)] = (self._state(view)[0], gen)

    def switch_generation(self, view: str, gen: int) -> None:
        with self._lock:
            self._store.generations[self._base(view)] = (gen, None)
            # the rebuild loaded it whole
            self._store.marked.add(generation_name(self._base(view), gen))

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        with self._lock:
            self._forget(generation_name(self._base(view), gen))


KIND = SinkKind("memory", MemorySinkConfig, MemorySink.from_config)
