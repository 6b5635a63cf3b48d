"""What sinks offer the query layer beyond reads by id: filters and search.

Reads by id need nothing here: every sink's ``fetch`` reads by id in one
round trip and reports tombstones as ``doc=None``; a sink that can also do
it on an event loop, without a thread, implements :class:`AsyncFetch` (the
server's get by id uses it). A sink that can answer
field conditions implements :class:`Filterable`, one that can run full-text
searches :class:`Searchable`; the query layer (``query/client.py``) asks the
sinks of a view which they are and calls them, never their internals. The
conditions arrive validated (``query/validate.py``). Every method raises
:class:`~pipeline.errors.TransientError` when the store is down, so the
client can fall back to another store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import ClassVar, Protocol, runtime_checkable

from connectors.base import Stored
from pipeline.errors import ReadsideError
from pipeline.events import Document
from pipeline.jsonforms import format_datetime

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Eq:
    """Field equals ``value``."""

    value: Scalar


#: A range bound: a number, or an instant as ISO 8601 text, either a date
#: (``2024-03-01``: its midnight, UTC) or a timestamp in readside's form
#: (``2024-03-01T10:15:30+00:00``, :func:`pipeline.jsonforms.format_datetime`).
Bound = float | str


@dataclass(frozen=True, slots=True)
class Range:
    """Field within bounds: operator (gt, gte, lt or lte) -> number or instant."""

    bounds: tuple[tuple[str, Bound], ...]


Condition = Eq | Range

#: What a search filters a field by: a value (term), any of several (terms),
#: or bounds.
SearchFilter = Scalar | list[Scalar] | Range


def instant(bound: str) -> datetime:
    """The instant a validated date or timestamp bound names (a date: its
    midnight, UTC)."""
    if len(bound) == 10:
        return datetime.combine(date.fromisoformat(bound), time(), UTC)
    return datetime.fromisoformat(bound)


def instant_text(bound: str) -> str:
    """A bound as a full timestamp in readside's form (a date: its midnight)."""
    return format_datetime(instant(bound))


#: Sort keys: (field, "asc" or "desc"), the first one first.
Sort = Sequence[tuple[str, str]]

#: Documents by id, and how many documents matched in all.
Found = tuple[dict[str, Document], int]


class SearchRefused(ReadsideError):
    """The store refused a search request as malformed (bad query syntax, a
    sort on a field it cannot sort): the caller's error, not the store's."""


@runtime_checkable
class AsyncFetch(Protocol):
    """A sink that reads by id on the running event loop."""

    async def afetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        """What ``fetch`` returns for the same ids, read without blocking
        the loop."""
        ...

    async def aclose(self) -> None:
        """Close what :meth:`afetch` opened, on the loop it ran on."""
        ...


@runtime_checkable
class Filterable(Protocol):
    """A sink that answers field conditions (equality, ranges of numbers or
    instants)."""

    #: Whether it answers before the other filterable sinks of a view when
    #: it covers the conditions (an in-memory index before a document store).
    filter_first: ClassVar[bool]

    def covers(self, view: str, where: dict[str, Condition], sort: Sort = ()) -> bool:
        """Whether it can answer every condition of ``where`` on ``view``, in
        the order ``sort`` asks."""
        ...

    def filter(
        self, view: str, where: dict[str, Condition], limit: int, sort: Sort = ()
    ) -> Found:
        """The live documents of ``view`` matching every condition, in the
        order of ``sort`` (then by id; none: by id), at most ``limit`` of
        them, and the number of matches."""
        ...


@runtime_checkable
class Searchable(Protocol):
    """A sink that runs full-text searches (tombstones excluded)."""

    name: str

    def search(
        self,
        view: str,
        query: str | None,
        filters: dict[str, SearchFilter],
        sort: list[tuple[str, str]],
        page: int,
        size: int,
    ) -> Found:
        """One page of hits in order, and the number of matches.

        Raises:
            SearchRefused: the store refused the request as malformed.
        """
        ...

    def refresh(self, view: str) -> None:
        """Make every write acknowledged so far searchable."""
        ...
