"""The document id of an aggregate view's root (``id:`` in the view's config).

By default a root's id is its whole primary key (:func:`~pipeline.events.
doc_id`). A view may name the key columns its id is built from instead
(``id: [payment_id]`` for a table keyed by ``(payment_id, paid_at)``): the id
is then :func:`~pipeline.events.doc_id` of those columns, in the order given.

readside trusts those columns to be unique among the roots. To keep every
document right when they are not, or when a root's key changes while its id
stays (a row moved to another partition), the view re-reads roots *by id*:
whichever key named a root, every root sharing its id is read in the same
snapshot. A root whose id another root of the read already took is refused
(reason ``duplicate_id``: dead-lettered by the worker, reported by
``readside verify``); the document keeps the root that comes first in key
order, and a vanished key deletes its id only when no other root holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import BadRecord, ConfigError
from pipeline.events import doc_id

Key = tuple[str, ...]


@dataclass(frozen=True)
class IdRule:
    """How one view's root key becomes a document id."""

    #: the root's primary-key columns, in key order
    key: tuple[str, ...]
    #: the key columns the id is built from, in id order
    columns: tuple[str, ...]

    @classmethod
    def of(
        cls, view: str, table: str, key: Sequence[str], named: Sequence[str] | None
    ) -> IdRule:
        """The rule of a view whose root ``table`` has primary key ``key``.

        Raises:
            ConfigError: ``named`` holds a column outside the key.
        """
        if named is None:
            return cls(tuple(key), tuple(key))
        outside = [c for c in named if c not in key]
        if outside:
            raise ConfigError(
                f"views.{view}.id: {', '.join(outside)} not in the primary key "
                f"of {table} ({', '.join(key)}); a document id is built from "
                "key columns only, so every change (deletes and tombstones "
                "too) names its document"
            )
        return cls(tuple(key), tuple(named))

    @property
    def custom(self) -> bool:
        """Whether the id leaves out or reorders key columns."""
        return self.columns != self.key

    def ident(self, key: dict[str, Any]) -> str:
        """The id of the root whose key columns are ``key``."""
        return doc_id({c: key[c] for c in self.columns})

    def ident_of(self, values: Sequence[Any]) -> str:
        """The id of the root whose key values are ``values`` (key order)."""
        return self.ident(dict(zip(self.key, values, strict=True)))

    def project(self, keys: Iterable[Key]) -> list[Key]:
        """The id columns' values of root keys, each id once, sorted."""
        at = [self.key.index(c) for c in self.columns]
        return sorted({tuple(k[i] for i in at) for k in keys})

    def duplicate(self, ident: str, first: Key, other: Key) -> BadRecord:
        """The error of root ``other`` whose id ``first`` already took."""
        return BadRecord(
            "duplicate_id",
            f"document id {ident!r} (columns {', '.join(self.columns)}) is also "
            f"the id of root ({', '.join(first)}); root ({', '.join(other)}) is "
            "not written: the id columns must be unique",
        )
