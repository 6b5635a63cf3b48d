"""The read side for sites: ``ReadClient``, the errors it raises, the LSN helper.

Names are imported on first use, so that ``pipeline.config`` can import the
API settings (:mod:`query.api_config`) without importing the client (which
imports ``pipeline.config``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from query.answer import Answer, Freshness
    from query.client import ReadClient
    from query.errors import NotYetFresh, QueryError, StoreUnavailable, UnknownView
    from query.lsn import commit_lsn, format_lsn

_HOME = {
    "Answer": "query.answer",
    "Freshness": "query.answer",
    "ReadClient": "query.client",
    "NotYetFresh": "query.errors",
    "QueryError": "query.errors",
    "StoreUnavailable": "query.errors",
    "UnknownView": "query.errors",
    "commit_lsn": "query.lsn",
    "format_lsn": "query.lsn",
}

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


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'query' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
