"""Errors the read client raises, each naming what went wrong.

* :class:`QueryError` — the caller's input is refused (a 4xx in HTTP terms);
  raised before any store is contacted.
* :class:`UnknownView` — the view is not in the configuration (a 404).
* :class:`OutOfFocus` — the caller is bound to a focus that does not cover
  the view (a 403).
* :class:`StoreUnavailable` — every store that could answer is down or timed
  out (a 503); names the view and the stores tried.
* :class:`NotYetFresh` — a read with ``min_lsn`` waited in vain for the view's
  watermark to reach that LSN (a 412); carries the watermark it saw.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import ReadsideError
from pipeline.events import format_lsn


class QueryError(ReadsideError):
    """Bad input: a refused field name, operator, value or page size.

    Attributes:
        reason: a short machine-readable reason, e.g. ``field`` or ``size``.
        status: the HTTP status a server should answer with (400).
    """

    status = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownView(QueryError):
    """The view is not defined in the configuration."""

    status = 404

    def __init__(self, view: str, known: Sequence[str]) -> None:
        super().__init__(
            "view", f"unknown view {view!r} (known: {', '.join(sorted(known))})"
        )
        self.view = view


class OutOfFocus(QueryError):
    """The view exists but the focus the caller is bound to does not cover it."""

    status = 403

    def __init__(self, view: str, focus: str, allowed: Sequence[str]) -> None:
        super().__init__(
            "focus",
            f"view {view!r} is outside focus {focus!r} "
            f"(it covers: {', '.join(allowed)})",
        )
        self.view = view
        self.focus = focus


class StoreUnavailable(ReadsideError):
    """No store that holds the view could answer.

    Attributes:
        view: the view asked for.
        stores: the sinks tried, in order.
        status: the HTTP status a server should answer with (503).
    """

    status = 503

    def __init__(self, view: str, stores: Sequence[str], cause: str) -> None:
        super().__init__(
            f"view {view!r}: no store could answer (tried {', '.join(stores)}): {cause}"
        )
        self.view = view
        self.stores = list(stores)


class NotYetFresh(ReadsideError):
    """The view's watermark did not reach ``min_lsn`` within the wait.

    Attributes:
        view: the view asked for.
        min_lsn: the LSN the caller asked to see.
        watermark: the view's safe watermark when the wait ended (``None``
            when none is known yet).
        status: the HTTP status a server should answer with (412).
    """

    status = 412

    def __init__(
        self, view: str, min_lsn: int, watermark: int | None, waited_s: float
    ) -> None:
        have = "none" if watermark is None else format_lsn(watermark)
        super().__init__(
            f"view {view!r}: watermark {have} did not reach min_lsn "
            f"{format_lsn(min_lsn)} within {waited_s:.1f}s"
        )
        self.view = view
        self.min_lsn = min_lsn
        self.watermark = watermark
