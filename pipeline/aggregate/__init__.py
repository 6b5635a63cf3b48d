"""Aggregate views: documents that nest rows of several tables, read by SQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import psycopg

from pipeline.aggregate.pending import Pending
from pipeline.aggregate.view import AggregateView
from pipeline.errors import TransientError

__all__ = ["AggregateView", "Pending", "prepare_views"]


class _Preparable(Protocol):
    """What :func:`prepare_views` asks of a view (:class:`pipeline.views.View`)."""

    @property
    def rereads(self) -> bool: ...

    def prepare(self, conn: psycopg.Connection[Any], strict: bool = True) -> None: ...


def prepare_views(
    views: Mapping[str, _Preparable], dsn: str, strict: bool = True
) -> None:
    """Prepare every view of ``views`` that reads the source against its
    catalog at ``dsn`` (the others need no connection).

    Raises:
        ConfigError: a view does not fit the source's tables (names the field).
        TransientError: the source is not reachable.
    """
    readers = [v for v in views.values() if v.rereads]
    if not readers:
        return
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            for view in readers:
                view.prepare(conn, strict=strict)
    except psycopg.OperationalError as exc:
        raise TransientError(f"source not reachable: {exc}") from exc
