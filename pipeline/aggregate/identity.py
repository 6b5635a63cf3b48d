"""Tables an aggregate view can follow only with REPLICA IDENTITY FULL, and
whether the source still has it.

A related row whose link to its enclosing row is outside its primary key
(``orders.customer_id``) names its former owner only from its ``before``
image, which PostgreSQL logs whole only under REPLICA IDENTITY FULL. The
worker refuses to start without it (:meth:`AggregateView.prepare
<pipeline.aggregate.view.AggregateView.prepare>`), but the identity can be
taken away while it runs: an ``ALTER TABLE ... REPLICA IDENTITY DEFAULT``, or
a partition attached or made later (by hand, or by a tool making each
month's partition) with its own, default, identity. From then on an update
that moves such a row comes without its ``before`` image, and a delete with
a key-only one (Debezium fills the other columns with zeros, so the delete
names an owner ``0``): the former owner's document keeps the row, with the
lag at zero.

:func:`problems` says so, naming the table or partition, the statement that
gives it back and the load that rewrites the documents; the worker's
:class:`pipeline.publication.Watch` looks every minute and ``readside
status`` at each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from pipeline.aggregate.view import AggregateView

#: The table and its partitions (at every level) whose replica identity is
#: not FULL, with it. (pg_partition_tree has no row for a table that is not
#: partitioned.)
_NOT_FULL = """
SELECT n.nspname || '.' || c.relname, c.relreplident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relreplident <> 'f'
  AND (c.oid = to_regclass(%(t)s)
       OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(t)s))))
ORDER BY 1
"""

_NAMES = {"d": "DEFAULT", "n": "NOTHING", "i": "USING INDEX"}


def needs_full(views: Iterable[Any]) -> dict[str, list[str]]:
    """Per table, the prepared aggregate views of ``views`` that need its
    REPLICA IDENTITY FULL."""
    out: dict[str, list[str]] = {}
    for view in views:
        if not isinstance(view, AggregateView) or view.root is None:
            continue
        for node in view.root.walk():
            if node.needs_full_identity():
                names = out.setdefault(node.table.name, [])
                if view.name not in names:
                    names.append(view.name)
    return out


def problems(
    conn: psycopg.Connection[Any], needs: Mapping[str, list[str]]
) -> list[str]:
    """What to say of each table of ``needs`` (:func:`needs_full`) with a
    partition, or itself, not REPLICA IDENTITY FULL."""
    out = []
    for table, views in sorted(needs.items()):
        for name, ident in conn.execute(_NOT_FULL, {"t": table}).fetchall():
            what = f"table {table}" if name == table else f"partition {name} of {table}"
            loads = "; ".join(f"readside snapshot {v}" for v in views)
            out.append(
                f"{what} has REPLICA IDENTITY {_NAMES.get(str(ident), ident)}, "
                f"not FULL, which view {', '.join(views)} needs: PostgreSQL no "
                "longer logs the former link of a row that moves to another "
                "owner or is deleted, so that owner's document keeps the row; "
                f"ALTER TABLE {name} REPLICA IDENTITY FULL, then {loads}"
            )
    return out
