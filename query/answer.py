"""What every read returns: the data, the store that answered, its freshness."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Freshness:
    """How far the answering store has applied the view.

    Attributes:
        applied_lsn: the lowest, over the view's partitions, of the last source
            LSN applied in this store; ``None`` before any checkpoint. A
            progress figure, not a promise: LSNs are not monotonic across rows
            in stream order, so read-your-writes uses ``watermark_lsn``.
        lag_ms: now minus the newest source commit time applied in this store;
            ``None`` before any checkpoint.
        watermark_lsn: the view's *safe* watermark (:mod:`query.watermark`):
            every source change committed at or before it is readable.
            ``None`` when the client has not sampled it (reads without
            ``min_lsn`` on a client without a tracker) or none is known yet.
    """

    applied_lsn: int | None = None
    lag_ms: int | None = None
    watermark_lsn: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The result of one read.

    Attributes:
        view: the view read.
        store: the name of the sink that answered (e.g. ``redis``).
        freshness: how fresh that store is for the view.
        doc: the document of :meth:`ReadClient.get` (``None`` when missing
            or deleted).
        docs: documents by id (``get_many``, ``search``, ``filter``); ids that
            are missing or deleted are absent.
        total: the number of matches (``search``: all pages; else ``len(docs)``).
        page: the page number (``search``).
        size: the page size (``search``) or the limit (``filter``).
    """

    view: str
    store: str
    freshness: Freshness
    doc: Doc | None = None
    docs: dict[str, Doc] = field(default_factory=dict)
    total: int = 0
    page: int = 1
    size: int = 0

    @property
    def applied_lsn(self) -> int | None:
        return self.freshness.applied_lsn

    @property
    def lag_ms(self) -> int | None:
        return self.freshness.lag_ms


def doc_body(view: str, ident: str, answer: Answer) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a get by id (both the lean path of
    :mod:`query.fastpath` and the FastAPI route answer with it)."""
    if answer.doc is None:
        return 404, {
            "error": f"no document {ident!r} in view {view!r}",
            "reason": "not_found",
            "id": ident,
        }
    return 200, {"id": ident, "doc": answer.doc}
