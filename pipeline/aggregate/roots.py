"""Which roots one batch re-reads, handed out a chunk at a time.

A batch names roots two ways (:class:`~pipeline.aggregate.view.Pending`):
directly (a root row, or a related row whose link is the root's whole key),
a set bounded by the batch; and through links that only SQL resolves (an
item names an order, the order its customer), which can fan out to every
root (a product's price). :class:`RootKeys` hands the direct keys out first,
then the resolved ones, at most ``size`` per chunk and each root once, so a
caller can read and write each chunk in its own snapshot before asking for
the next. The resolved keys come from one server-side cursor (:class:`Links`)
declared in the first snapshot that needs them: the process holds one chunk
of them at a time, whatever the fan-out.

Each key comes with the position of a change that named it (for a resolved
root, the change whose link reached it), so a root the view cannot build
dead-letters that change and not another one of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from psycopg import sql

from pipeline.aggregate.plan import (
    ViewSQL,
    col,
    ident,
    link_condition,
    table_ref,
    typed_keys,
    unnest_keys,
    where_clause,
)
from pipeline.aggregate.reader import Reader, key_text
from pipeline.aggregate.tree import Node
from pipeline.events import Position
from pipeline.types import pg_value_to_json

if TYPE_CHECKING:
    import psycopg

Key = tuple[str, ...]
Blamed = tuple[Key, Position | None]


def row_key(values: Iterable[Any]) -> Key:
    """The key texts of key column values as psycopg returns them."""
    return tuple(key_text(pg_value_to_json(v)) for v in values)


# --- SQL ---------------------------------------------------------------------


def _root_keys(root: Node) -> sql.Composable:
    """``t0.a AS r0, t0.b AS r1, ...``: the root's key columns, renamed."""
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(col(root, c), ident(f"r{i}"))
        for i, c in enumerate(root.table.primary_key)
    )


def resolve_query(node: Node, prefix: str) -> sql.Composed:
    """Root keys of the rows of ``node.enclosing`` whose link columns match.

    The link values come as text arrays ``{prefix}k0, ...`` in the order of
    ``node.on``'s values (columns of the enclosing node), with an integer
    array ``{prefix}tag`` of the same length; each row is one root key
    (``r0, ...``) and the ``tag`` of a link that reached it.
    """
    assert node.enclosing is not None
    path = node.enclosing.path_from_root()
    root = path[0]
    joins = [
        sql.SQL(" JOIN {} AS {} ON {}").format(
            table_ref(n.table.name), ident(n.alias), link_condition(n)
        )
        for n in path[1:]
    ]
    target = path[-1]
    cols = [target.table.columns[c] for c in node.on.values()]
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(col(target, c.name), typed)
        for c, typed in zip(cols, typed_keys(cols), strict=True)
    )
    params = [f"{prefix}k{i}" for i in range(len(cols))]
    return sql.SQL("SELECT {}, u.tag FROM {} AS {}{} JOIN {} ON {}").format(
        _root_keys(root),
        table_ref(root.table.name),
        ident(root.alias),
        sql.SQL("").join(joins),
        unnest_keys(cols, params, f"{prefix}tag"),
        match,
    )


def all_roots_query(view_sql: ViewSQL) -> sql.Composed:
    """Every root key the view defines (``r0, ...``), with a null ``tag``."""
    root = view_sql.root
    return sql.SQL("SELECT {}, NULL::integer AS tag FROM {} AS {}").format(
        _root_keys(root), table_ref(root.table.name), ident(root.alias)
    ) + where_clause(view_sql.filters())


def roots_query(root: Node, parts: list[sql.Composed]) -> sql.Composed:
    """Each root key of the union of ``parts`` once, in key order, with the
    smallest tag that reached it (a real one before a null)."""
    keys = sql.SQL(", ").join(
        ident(f"r{i}") for i in range(len(root.table.primary_key))
    )
    return sql.SQL(
        "SELECT DISTINCT ON ({}) {}, tag FROM ({}) AS r ORDER BY {}, tag"
    ).format(keys, keys, sql.SQL(" UNION ALL ").join(parts), keys)


# --- chunks ------------------------------------------------------------------


class RootKeys:
    """The roots of one batch, at most ``size`` per :meth:`next_chunk`.

    Args:
        direct: roots named directly, each with the position that named it.
        size: most roots per chunk (at least 1).
        fetch: more resolved roots, up to the number asked (fewer only when
            there are no more); None when nothing needs resolving.
    """

    def __init__(
        self,
        direct: Mapping[Key, Position | None],
        size: int,
        fetch: Callable[[int], list[Blamed]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, not {size}")
        self.size = size
        self._direct = dict(direct)
        self._order = sorted(self._direct)
        self._next = 0
        self._fetch = fetch
        self.exhausted = fetch is None

    @property
    def done(self) -> bool:
        """Whether every root was handed out (a last chunk may still be empty)."""
        return self._next >= len(self._order) and self.exhausted

    def next_chunk(self) -> dict[Key, Position | None]:
        """The next roots (direct ones first), each handed out once."""
        keys = self._order[self._next : self._next + self.size]
        self._next += len(keys)
        chunk = {k: self._direct[k] for k in keys}
        while len(chunk) < self.size and not self.exhausted:
            assert self._fetch is not None
            need = self.size - len(chunk)
            got = self._fetch(need)
            self.exhausted = len(got) < need
            for key, pos in got:
                if key not in self._direct:  # read with the direct ones
                    chunk.setdefault(key, pos)
        return chunk


class Links:
    """The roots that links reach by SQL (and, after a truncate, every root),
    streamed from one cursor WITH HOLD declared on first :meth:`fetch`.

    Args:
        reader: whose connection holds the cursor; :meth:`fetch` must be
            called inside one of its read transactions.
        view_sql: the view's statements.
        links: per node whose link needs SQL, its link values (texts) and
            the position of a change that named each.
        every_root: the position of a truncate that asks for every root the
            view defines too (None: only the linked roots).
    """

    def __init__(
        self,
        reader: Reader,
        view_sql: ViewSQL,
        links: Iterable[tuple[Node, Mapping[Key, Position | None]]],
        every_root: Position | None = None,
    ) -> None:
        self.reader = reader
        self.positions: list[Position | None] = []
        self.params: dict[str, Any] = {}
        self.parts: list[sql.Composed] = []
        self.root = view_sql.root
        for n, (node, values) in enumerate(links):
            ordered = sorted(values)
            prefix = f"l{n}_"
            for i in range(len(node.on)):
                self.params[f"{prefix}k{i}"] = [v[i] for v in ordered]
            start = len(self.positions)
            self.params[f"{prefix}tag"] = list(range(start, start + len(ordered)))
            self.positions += [values[v] for v in ordered]
            self.parts.append(resolve_query(node, prefix))
        self.every_root = every_root
        if every_root is not None:
            self.parts.append(all_roots_query(view_sql))
        self._cursor: psycopg.ServerCursor[Any] | None = None

    def fetch(self, size: int) -> list[Blamed]:
        """Up to ``size`` more root keys, each with the position that named it."""
        if not self.parts:
            return []
        if self._cursor is None:
            self._cursor = self.reader.declare(
                roots_query(self.root, self.parts), self.params
            )
        out: list[Blamed] = []
        for row in self.reader.fetch(self._cursor, size):
            tag = row[-1]
            named = self.every_root if tag is None else self.positions[tag]
            out.append((row_key(row[:-1]), named))
        return out

    def close(self) -> None:
        if self._cursor is not None:
            self.reader.close_cursor(self._cursor)
            self._cursor = None
