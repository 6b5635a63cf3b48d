"""What a transform is: the one protocol the chain, the built-ins and the
loader share (each imports it from here, so none imports another for it)."""

from __future__ import annotations

from typing import Protocol

from pipeline.events import Document


class Transform(Protocol):
    """One document transform.

    Called once per document, possibly many times for the same document
    (replays), so it must be deterministic and free of side effects.

    Returns:
        A new document, or ``None`` to drop the document.

    Raises:
        BadRecord: this document cannot be transformed; it is dead-lettered.
    """

    def __call__(self, doc: Document, /) -> Document | None: ...
