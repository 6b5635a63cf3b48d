"""The tree of an aggregate view: its tables and how they link, checked.

A view is a tree of :class:`Node`: the root table, then children, parents and
many-to-many targets, with each many-to-many's ``through`` table as a hidden
node between. How a node shapes its output (its ``value`` column, or its
fields ``lift``-ed into the enclosing level) changes no link: a change of its
table finds its roots like any other level's. :func:`build_tree` makes the
tree from the view's configuration and checks every table, column and link
against the source's catalog (a bad one raises
:class:`~pipeline.errors.ConfigError` naming the field). The SQL that reads
the tree's documents is :mod:`pipeline.aggregate.plan`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.aggregate.catalog import Catalog, Column, TableInfo
from pipeline.errors import ConfigError
from pipeline.viewconfig import AggregateViewConfig, RelationConfig


@dataclass
class Node:
    """One table in the view's tree."""

    where: str  # config path, for messages
    alias: str
    table: TableInfo
    kind: str  # root | children | parent | through | m2m
    on: dict[str, str]  # this node's column -> enclosing node's column
    enclosing: Node | None
    fields: list[tuple[str, Column]] = field(default_factory=list)
    relations: list[tuple[str, Node]] = field(default_factory=list)
    order_by: list[tuple[str, str]] = field(default_factory=list)  # (col, dir)
    limit: int | None = None
    value: Column | None = None  # the one column it yields instead of objects
    lift: bool = False  # its fields go into the enclosing level

    def output_names(self) -> list[str]:
        """The keys this node's object holds, lifted parents' keys included."""
        names = [k for k, _ in self.fields]
        for key, rel in self.relations:
            names += rel.output_names() if rel.lift else [key]
        return names

    def path_from_root(self) -> list[Node]:
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.enclosing
        return nodes[::-1]

    def walk(self) -> Iterator[Node]:
        yield self
        for _, rel in self.relations:
            if rel.kind == "m2m" and rel.enclosing is not None:
                yield rel.enclosing  # the through node
            yield from rel.walk()

    def needs_full_identity(self) -> bool:
        """Whether a change can move this row to another enclosing row unseen.

        The old link is needed from the ``before`` image; PostgreSQL only
        logs it for primary-key columns unless REPLICA IDENTITY is FULL.
        """
        if self.kind == "root":
            return False
        return not set(self.on) <= set(self.table.primary_key)


class _Builder:
    def __init__(self, catalog: Catalog, view: str) -> None:
        self.catalog = catalog
        self.view = view
        self.count = 0

    def alias(self) -> str:
        self.count += 1
        return f"t{self.count - 1}"

    def node(
        self,
        where: str,
        table: str,
        kind: str,
        on: dict[str, str],
        enclosing: Node | None,
        level: AggregateViewConfig | RelationConfig | None,
    ) -> Node:
        info = self.catalog.table(table, where)
        if not info.primary_key:
            raise ConfigError(f"{where}: table {table} has no primary key")
        node = Node(where, self.alias(), info, kind, dict(on), enclosing)
        for mine, theirs in on.items():
            info.column(mine, f"{where}.on")
            if enclosing is not None:
                enclosing.table.column(theirs, f"{where}.on")
        if level is None:  # a through table: no output of its own
            return node
        if isinstance(level, RelationConfig) and level.value is not None:
            node.value = info.column(level.value, f"{where}.value")
        else:
            node.fields = self._fields(where, info, level)
        if isinstance(level, RelationConfig):
            node.lift = level.lift
            for entry in level.order_by:
                name, _, direction = entry.partition(" ")
                info.column(name, f"{where}.order_by")
                node.order_by.append((name, direction.strip().upper() or "ASC"))
            node.limit = level.limit
        listed = {c for c, _ in node.order_by}
        node.order_by += [(c, "ASC") for c in info.primary_key if c not in listed]
        for key, rel in level.embed.items():
            node.relations.append(
                (key, self.relation(f"{where}.embed.{key}", rel, node))
            )
        names = node.output_names()
        dupes = sorted({k for k in names if names.count(k) > 1})
        if dupes:
            lifted = [f"embed.{k}" for k, rel in node.relations if rel.lift]
            note = (
                f" (with the fields lifted from {', '.join(lifted)})" if lifted else ""
            )
            raise ConfigError(
                f"{where}: field name(s) used twice{note}: {', '.join(dupes)}"
            )
        return node

    def _fields(
        self, where: str, info: TableInfo, level: AggregateViewConfig | RelationConfig
    ) -> list[tuple[str, Column]]:
        names = level.fields if level.fields is not None else list(info.columns)
        for name in [*names, *level.exclude, *level.rename]:
            info.column(name, where)
        return [
            (level.rename.get(n, n), info.columns[n])
            for n in names
            if n not in level.exclude
        ]

    def relation(self, where: str, rel: RelationConfig, enclosing: Node) -> Node:
        if rel.kind != "m2m":
            return self.node(where, rel.table, rel.kind, rel.on, enclosing, rel)
        assert rel.through is not None
        assert rel.target_on is not None
        through = self.node(where, rel.through, "through", rel.on, enclosing, None)
        return self.node(where, rel.table, "m2m", rel.target_on, through, rel)


def build_tree(catalog: Catalog, name: str, cfg: AggregateViewConfig) -> Node:
    """The view's tree, checked against the catalog (names the bad field)."""
    return _Builder(catalog, name).node(
        f"views.{name}", cfg.table, "root", {}, None, cfg
    )


def direct_keys(node: Node) -> list[str] | None:
    """When ``node``'s link columns name the root's whole key, which they are.

    Returns the columns of ``node`` in root-key order, or None when the root
    keys must be resolved by SQL.
    """
    enc = node.enclosing
    if enc is None or enc.kind != "root":
        return None
    by_root_col = {theirs: mine for mine, theirs in node.on.items()}
    if set(by_root_col) != set(enc.table.primary_key):
        return None
    return [by_root_col[c] for c in enc.table.primary_key]


def named_by_image_only(node: Node) -> bool:
    """Whether a row of ``node``'s table names its owner only in a row image
    (a child whose link is outside its key): its tombstone names no root."""
    if node.kind == "root":
        return False
    direct = direct_keys(node)
    cols = direct if direct is not None else list(node.on)
    return not set(cols) <= set(node.table.primary_key)
