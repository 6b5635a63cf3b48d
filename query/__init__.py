"""The read side for sites: ``ReadClient``, the errors it raises, the LSN helper."""

from __future__ import annotations

from query.answer import Answer, Freshness
from query.client import ReadClient
from query.errors import NotYetFresh, QueryError, StoreUnavailable, UnknownView
from query.lsn import commit_lsn, format_lsn

__all__ = [
    "Answer",
    "Freshness",
    "NotYetFresh",
    "QueryError",
    "ReadClient",
    "StoreUnavailable",
    "UnknownView",
    "commit_lsn",
    "format_lsn",
]
