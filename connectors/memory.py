"""An in-memory sink with failure knobs, for unit tests of the worker loop.

It keeps the same version rule as the real sinks, so the loop's tests check
convergence exactly as the integration tests do. It is also the sink type
``memory`` (``sinks: {scratch: {type: memory}}``): a store of one process,
for trials and tests, that forgets everything when the process ends. It is
the smallest example of a store: its config model, its sink and its ``KIND``,
registered in pyproject.toml under ``readside.sinks`` (docs/development.md).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from connectors.base import SinkKind, Stored, StoreSink, ViewTarget, WriteResult
from pipeline.errors import TransientError
from pipeline.events import Delete, DocumentOp
from pipeline.sinktypes import SinkConfig


class MemorySinkConfig(SinkConfig):
    """The settings of a ``memory`` sink: its failure knobs (see
    :class:`MemorySink`)."""

    type: Literal["memory"]
    fail_prob: float = Field(0.0, ge=0, le=1)
    partial_fail_prob: float = Field(0.0, ge=0, le=1)
    reject_ids: list[str] = Field(default_factory=list)
    seed: int | None = None


class MemorySink(StoreSink[MemorySinkConfig]):
    """A dict of ``(view, id) -> Stored`` behind the :class:`Sink` protocol.

    Args:
        name: the sink's name.
        fail_prob: chance that a ``write`` raises :class:`TransientError`
            before applying anything.
        partial_fail_prob: chance that a ``write`` applies the first half of
            the batch and then raises :class:`TransientError`.
        reject_ids: document ids the store refuses (reported as rejected).
        seed: seed of the knobs' random generator.
        targets: the views it holds (any view is accepted).
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
        self.data: dict[tuple[str, str], Stored] = {}
        self.writes = 0
        self._random = random.Random(seed)  # noqa: S311 (failure knobs, not crypto)
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, name: str, cfg: MemorySinkConfig, targets: Mapping[str, ViewTarget]
    ) -> MemorySink:
        """The sink of a ``type: memory`` entry of ``sinks:``."""
        return cls(
            name,
            fail_prob=cfg.fail_prob,
            partial_fail_prob=cfg.partial_fail_prob,
            reject_ids=cfg.reject_ids,
            seed=cfg.seed,
            targets=targets,
        )

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        if self.down or self._random.random() < self.fail_prob:
            raise TransientError(f"sink {self.name} unavailable")
        cut = len(ready)
        partial = self._random.random() < self.partial_fail_prob
        if partial:
            cut = len(ready) // 2
        with self._lock:
            self.writes += 1
            for op in ready[:cut]:
                if op.doc_id in self.reject_ids:
                    result.rejected.append((op, "rejected by the memory store"))
                    continue
                key = (op.view, op.doc_id)
                have = self.data.get(key)
                if have is not None and have.version > op.version:
                    result.stale += 1
                    continue
                if have is not None and have.version == op.version:
                    result.stale += 1
                    continue
                doc = None if isinstance(op, Delete) else dict(op.doc)
                self.data[key] = Stored(op.version, doc)
                result.applied += 1
        if partial:
            raise TransientError(f"sink {self.name} failed mid-batch")
        return result

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        with self._lock:
            return {i: self.data[(view, i)] for i in ids if (view, i) in self.data}

    def ids(self, view: str) -> set[str]:
        with self._lock:
            return {
                i for (v, i), s in self.data.items() if v == view and s.doc is not None
            }

    def documents(self, view: str) -> dict[str, dict[str, object]]:
        """Live documents of ``view`` by id (a test helper)."""
        with self._lock:
            return {
                i: dict(s.doc)
                for (v, i), s in self.data.items()
                if v == view and s.doc is not None
            }

    def drop(self, view: str) -> None:
        """Forget every document and tombstone of ``view`` (tests)."""
        with self._lock:
            for key in [k for k in self.data if k[0] == view]:
                del self.data[key]


KIND = SinkKind("memory", MemorySinkConfig, MemorySink.from_config)
