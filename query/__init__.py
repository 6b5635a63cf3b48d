"""The read side for sites: ``ReadClient`` and the errors it raises."""

from __future__ import annotations

from query.answer import Answer, Freshness
from query.client import ReadClient
from query.errors import QueryError, StoreUnavailable, UnknownView

__all__ = [
    "Answer",
    "Freshness",
    "QueryError",
    "ReadClient",
    "StoreUnavailable",
    "UnknownView",
]
