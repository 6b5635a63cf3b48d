"""The SQL of an aggregate view: one query builds every document.

A view is a tree of :class:`~pipeline.aggregate.tree.Node` (the root table,
then children, parents and many-to-many targets, with each many-to-many's
``through`` table as a hidden node between; :mod:`pipeline.aggregate.tree`).
Each node becomes a ``json_build_object`` of its fields and nested
relations, so one statement returns finished documents::

    SELECT t0."id", json_build_object('id', t0."id"::text, 'orders',
      (SELECT COALESCE(json_agg(json_build_object(...) ORDER BY t1."id"), '[]')
       FROM (SELECT * FROM public.orders AS t1 WHERE t1."customer_id" = t0."id")
       AS t1)) AS doc
    FROM public.customers AS t0

A level with ``value`` yields that column instead of an object (a scalar
subquery for a parent, ``json_agg`` of the column for an array); a lifted
parent's object (jsonb) is merged into its enclosing one with ``||``, from a
one-row ``LEFT JOIN`` so that its keys are there (null) when no parent row
matches, and the merged object is cast to json.

Column values travel as PostgreSQL's own text form; :mod:`pipeline.aggregate.
documents` loads each with psycopg's loader for the column's type and maps it
like a table view maps the same column (docs/types.md), so both kinds of view
give the same JSON for the same row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pipeline.aggregate.catalog import Column
from pipeline.aggregate.tree import Node

#: json_build_object takes at most 100 arguments: 50 key/value pairs.
PAIRS_PER_CALL = 50


def ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def table_ref(name: str) -> sql.Composable:
    schema, table = name.split(".", 1)
    return ident(schema, table)


def col(node: Node, name: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(ident(node.alias), ident(name))


# --- SQL ---------------------------------------------------------------------


#: Types whose cast to text is not their output function (what Debezium
#: sends): inet adds a full netmask ("10.0.0.1/32"), char(n) drops its padding.
#: to_jsonb() gives the output function's text as a JSON string.
_OUTPUT_TEXT_OIDS = frozenset({869, 1042})  # inet, bpchar


#: Types whose JSON form is a JSON number or boolean (int2, int4, int8, bool):
#: a document carries them as such (json looks through a domain to its base).
NATIVE_OIDS = frozenset({21, 23, 20, 16})


def _value(node: Node, column: Column) -> sql.Composable:
    """A field of a document: its JSON form for :data:`NATIVE_OIDS`, else
    the text :class:`~pipeline.aggregate.documents.Converter` loads."""
    expr = col(node, column.name)
    if column.oid in NATIVE_OIDS:
        return expr
    return value_text(expr, column)


def value_text(expr: sql.Composable, column: Column) -> sql.Composable:
    """``expr`` (a value of ``column``) as the text
    :meth:`~pipeline.aggregate.documents.Values.value` reads back (inside a
    jsonb object: a JSON string; use ``#>> '{}'`` for plain text)."""
    if column.oid in _OUTPUT_TEXT_OIDS:
        return sql.SQL("to_jsonb({})").format(expr)
    cast = "::numeric::text" if column.is_money else "::text"
    return sql.SQL("{}{}").format(expr, sql.SQL(cast))


def document(node: Node, binary: bool = False) -> sql.Composable:
    """The json object of one row of ``node``, relations nested and lifted
    parents' objects merged in; with ``binary``, that object as jsonb.

    ``json``, not ``jsonb``: PostgreSQL writes it as text as it goes, where
    jsonb builds a binary value first and prints it afterwards (the keys are
    unique, so nothing of jsonb's is missed). Only jsonb has ``||``: an
    object of more pairs than one call takes, or one with lifted parents'
    objects to merge in, is joined as jsonb and cast to json.
    """
    pairs: list[sql.Composable] = []
    lifted: list[sql.Composable] = []
    for key, column in node.fields:
        pairs.append(sql.SQL("{}, {}").format(sql.Literal(key), _value(node, column)))
    for key, rel in node.relations:
        if rel.lift:
            lifted.append(_lifted(rel))
        else:
            pairs.append(sql.SQL("{}, {}").format(sql.Literal(key), _relation(rel)))
    if not binary and not lifted and len(pairs) <= PAIRS_PER_CALL:
        if not pairs:
            return sql.SQL("'{}'::json")
        return sql.SQL("json_build_object({})").format(sql.SQL(", ").join(pairs))
    calls = [
        sql.SQL("jsonb_build_object({})").format(
            sql.SQL(", ").join(pairs[i : i + PAIRS_PER_CALL])
        )
        for i in range(0, len(pairs), PAIRS_PER_CALL)
    ]
    parts = calls + lifted
    if not parts:  # binary only: an empty json object returned above
        return sql.SQL("'{}'::jsonb")
    joined = sql.SQL(" || ").join(parts)
    return joined if binary else sql.SQL("({})::json").format(joined)


def link_condition(node: Node) -> sql.Composable:
    """``node.col = enclosing.col AND ...`` for each pair of its ``on``."""
    assert node.enclosing is not None
    parent = node.enclosing
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(col(node, mine), col(parent, theirs))
        for mine, theirs in node.on.items()
    )


def _order(node: Node) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(col(node, c), sql.SQL(d)) for c, d in node.order_by
    )


def _item(node: Node) -> sql.Composable:
    """What one related row becomes: its ``value`` column, or its object."""
    if node.value is not None:
        return _value(node, node.value)
    return document(node)


def _lifted(node: Node) -> sql.Composable:
    """A lifted parent's object, its keys null when no row matches (one row
    from a left join), to be merged into the enclosing object."""
    return sql.SQL("(SELECT {} FROM (SELECT) AS {} LEFT JOIN {} AS {} ON {})").format(
        document(node, binary=True),
        ident(f"{node.alias}_one"),
        table_ref(node.table.name),
        ident(node.alias),
        link_condition(node),
    )


def _relation(node: Node) -> sql.Composable:
    alias = ident(node.alias)
    if node.kind == "parent":
        return sql.SQL("(SELECT {} FROM {} AS {} WHERE {})").format(
            _item(node), table_ref(node.table.name), alias, link_condition(node)
        )
    if node.kind == "children":
        rows = sql.SQL("SELECT * FROM {} AS {} WHERE {}").format(
            table_ref(node.table.name), alias, link_condition(node)
        )
    else:  # m2m: through the hidden node
        through = node.enclosing
        assert through is not None
        rows = sql.SQL("SELECT {}.* FROM {} AS {} JOIN {} AS {} ON {} WHERE {}").format(
            alias,
            table_ref(through.table.name),
            ident(through.alias),
            table_ref(node.table.name),
            alias,
            link_condition(node),
            link_condition(through),
        )
    if node.limit is not None:
        rows = sql.SQL("{} ORDER BY {} LIMIT {}").format(
            rows, _order(node), sql.Literal(node.limit)
        )
    return sql.SQL(
        "(SELECT COALESCE(json_agg({} ORDER BY {}), '[]'::json) FROM ({}) AS {})"
    ).format(_item(node), _order(node), rows, alias)


#: bytea: keys travel in their JSON form, base64 (docs/types.md), which a
#: cast to bytea would take as the text's own bytes.
_BYTEA_OID = 17


def from_text(text: sql.Composable, column: Column) -> sql.Composable:
    """``text`` (a key value's JSON form as text) as a value of ``column``'s type.

    Every key or link value travels from the change events to SQL as the text
    of its JSON form; PostgreSQL's input function reads all of them back (uuid,
    numeric, timestamptz with offset, ISO 8601 intervals...) except bytea's
    base64.
    """
    if column.oid == _BYTEA_OID:
        return sql.SQL("decode({}, 'base64')").format(text)
    return sql.SQL("{}::{}").format(text, sql.SQL(column.sql_type))


def unnest_keys(
    cols: list[Column], params: list[str], tag: str | None = None
) -> sql.Composable:
    """``unnest(%(p0)s::text[], ...) AS u(k0, ...)``: key texts, one row each.

    With ``tag``, an ``integer[]`` of the same length adds column ``u.tag``.
    """
    arrays = [sql.SQL("{}::text[]").format(sql.Placeholder(p)) for p in params]
    names = [ident(f"k{i}") for i in range(len(cols))]
    if tag is not None:
        arrays.append(sql.SQL("{}::integer[]").format(sql.Placeholder(tag)))
        names.append(ident("tag"))
    return sql.SQL("unnest({}) AS u({})").format(
        sql.SQL(", ").join(arrays), sql.SQL(", ").join(names)
    )


def typed_keys(cols: list[Column]) -> list[sql.Composable]:
    """The columns of :func:`unnest_keys`'s rows, each as its key column's type."""
    return [
        from_text(sql.SQL("u.{}").format(ident(f"k{i}")), c) for i, c in enumerate(cols)
    ]


def _key_condition(node: Node, params: list[str]) -> sql.Composable:
    """``(t.a, t.b) IN (the key texts k0, k1, ... as the key types)``."""
    cols = [node.table.columns[c] for c in params]
    return sql.SQL("({}) IN (SELECT {} FROM {})").format(
        sql.SQL(", ").join(col(node, c.name) for c in cols),
        sql.SQL(", ").join(typed_keys(cols)),
        unnest_keys(cols, [f"k{i}" for i in range(len(cols))]),
    )


def _select(root: Node) -> sql.Composed:
    keys = sql.SQL(", ").join(col(root, c) for c in root.table.primary_key)
    return sql.SQL("SELECT {}, {} AS doc FROM {} AS {}").format(
        keys, document(root), table_ref(root.table.name), ident(root.alias)
    )


def where_clause(conditions: list[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


def _order_by_key(root: Node) -> sql.Composable:
    return sql.SQL(" ORDER BY {}").format(
        sql.SQL(", ").join(col(root, c) for c in root.table.primary_key)
    )


@dataclass
class ViewSQL:
    """The statements of one view (``%(name)s`` placeholders)."""

    root: Node
    where: str | None
    #: the key columns of the view's document id (default: the whole key)
    id_columns: list[str] | None = None

    def filters(self, extra: str | None = None) -> list[sql.Composable]:
        out: list[sql.Composable] = []
        for cond in (self.where, extra):
            if cond:
                # Operator-written SQL from the config or the command line.
                out.append(sql.SQL("({})").format(sql.SQL(cond)))
        return out

    def definition(self) -> sql.Composed:
        """Every document of the view (what ``readside verify`` compares with)."""
        return (
            _select(self.root) + where_clause(self.filters()) + _order_by_key(self.root)
        )

    def by_keys(self) -> sql.Composed:
        """Documents of the roots with the keys given as text arrays k0, k1, ...

        With ``id_columns``, the arrays hold those columns' values and every
        root sharing an id is read, in key order (:mod:`pipeline.aggregate.ids`).
        """
        cols = self.id_columns or self.root.table.primary_key
        cond = _key_condition(self.root, cols)
        out = _select(self.root) + where_clause([cond, *self.filters()])
        return out + _order_by_key(self.root) if self.id_columns else out

    def _after(self, first: bool, extra: str | None) -> list[sql.Composable]:
        """The filters, and unless ``first`` the root key after ``(%(a0)s, ...)``."""
        conds = self.filters(extra)
        if not first:
            keys = self.root.table.primary_key
            after = sql.SQL("({}) > ({})").format(
                sql.SQL(", ").join(col(self.root, c) for c in keys),
                sql.SQL(", ").join(
                    from_text(
                        sql.SQL("{}::text").format(sql.Placeholder(f"a{i}")),
                        self.root.table.columns[c],
                    )
                    for i, c in enumerate(keys)
                ),
            )
            conds.insert(0, after)
        return conds

    def chunk(self, first: bool, extra: str | None = None) -> sql.Composed:
        """Up to ``%(limit)s`` documents after key ``(%(a0)s, ...)`` in key order."""
        conds = self._after(first, extra)
        return (
            _select(self.root)
            + where_clause(conds)
            + _order_by_key(self.root)
            + sql.SQL(" LIMIT {}").format(sql.Placeholder("limit"))
        )

    def keys(self) -> sql.Composed:
        """The key columns of every root the view defines (no documents)."""
        keys = sql.SQL(", ").join(
            col(self.root, c) for c in self.root.table.primary_key
        )
        return sql.SQL("SELECT {} FROM {} AS {}").format(
            keys, table_ref(self.root.table.name), ident(self.root.alias)
        ) + where_clause(self.filters())

    def count(self, extra: str | None = None, first: bool = True) -> sql.Composed:
        """How many roots the view defines (unless ``first``: after key
        ``(%(a0)s, ...)``, as :meth:`chunk` reads them)."""
        return sql.SQL("SELECT count(*) FROM {} AS {}").format(
            table_ref(self.root.table.name), ident(self.root.alias)
        ) + where_clause(self._after(first, extra))


def render(conn: Any, query: sql.Composable) -> str:
    """The statement as text, for ``config check`` and logs."""
    return query.as_string(conn)
