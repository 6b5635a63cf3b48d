"""PostgreSQL LSNs as numbers, and the helper sites use after a commit.

PostgreSQL prints an LSN as two hexadecimal halves, ``16/B374D848``; readside
compares them as 64-bit integers. A site that wants to read its own write
takes the server's WAL position right after ``COMMIT`` and passes it as
``min_lsn``::

    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (42,))
    lsn = commit_lsn(conn)          # after the transaction block committed
    client.get("orders", 42, min_lsn=lsn)
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.events import format_lsn
from query.errors import QueryError

__all__ = ["MAX_LSN", "commit_lsn", "format_lsn", "parse"]

_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
MAX_LSN = 2**64 - 1


def parse(value: object) -> int:
    """An LSN given as ``'16/B374D848'``, a decimal string or an int.

    Raises:
        QueryError: (reason ``min_lsn``) anything else, or out of range.
    """
    if isinstance(value, bool):
        raise QueryError("min_lsn", f"min_lsn {value!r} is not an LSN")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        m = _TEXT.match(text)
        if m:
            number = (int(m.group(1), 16) << 32) | int(m.group(2), 16)
        elif text.isascii() and text.isdigit() and len(text) <= 20:
            # (ASCII: str.isdigit takes '²' and other digits int() refuses)
            number = int(text)
        else:
            raise QueryError(
                "min_lsn",
                f"min_lsn {value[:40]!r} is neither 'X/Y' (hex) nor an integer",
            )
    else:
        raise QueryError("min_lsn", f"min_lsn {value!r} is not an LSN")
    if not 0 <= number <= MAX_LSN:
        raise QueryError("min_lsn", f"min_lsn {number} is out of range")
    return number


def commit_lsn(conn: Any) -> int:
    """The WAL position of ``conn``'s server, to pass as ``min_lsn``.

    Call it on the connection that wrote, after its transaction committed
    (outside the transaction block, or in autocommit mode). The position is
    past the commit record of that transaction, so a read model whose
    watermark reaches it includes the write. Works with psycopg 3 (and any
    DB-API connection whose ``cursor().execute`` runs plain SQL).
    """
    cur = conn.cursor()
    try:
        cur.execute("SELECT pg_current_wal_lsn()::text")
        row = cur.fetchone()
    finally:
        cur.close()
    if row is None:
        raise RuntimeError("pg_current_wal_lsn() returned no row")
    return parse(row[0])
