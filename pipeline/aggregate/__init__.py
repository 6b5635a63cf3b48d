"""Aggregate views: documents that nest rows of several tables, read by SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from pipeline.aggregate.view import AggregateView, Pending
from pipeline.errors import TransientError

__all__ = ["AggregateView", "Pending", "prepare_views"]


def prepare_views(views: Mapping[str, Any], dsn: str, strict: bool = True) -> None:
    """Prepare every aggregate view of ``views`` against the catalog at ``dsn``.

    Raises:
        ConfigError: a view does not fit the source's tables (names the field).
        TransientError: the source is not reachable.
    """
    aggregates = [v for v in views.values() if isinstance(v, AggregateView)]
    if not aggregates:
        return
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            for view in aggregates:
                view.prepare(conn, strict=strict)
    except psycopg.OperationalError as exc:
        raise TransientError(f"source not reachable: {exc}") from exc
