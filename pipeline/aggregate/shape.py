"""The shape of a view's documents, read from the source's catalog.

Each field of a view's documents comes from a column (or, in an aggregate
view, is a nested level of rows), so the catalog says what it holds
(:class:`pipeline.fieldtypes.FieldType`). Stores derive their native types
from it when they create a view's place (an Elasticsearch index's mapping)
or write a document (MongoDB's ``Decimal128`` numerics).

What the shape does not see: fields that a transform adds, renames or
re-types (a store maps those as it would without a shape: dynamically).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import psycopg

from pipeline.aggregate.catalog import Catalog, TableInfo
from pipeline.aggregate.tree import Node, build_tree
from pipeline.config import Config
from pipeline.errors import ConfigError, TransientError
from pipeline.fieldtypes import FieldType, Shape, level
from pipeline.viewconfig import AggregateViewConfig, TableViewConfig

logger = logging.getLogger(__name__)


def tree_shape(node: Node) -> dict[str, FieldType]:
    """The shape of the documents of ``node``'s level, nested levels included."""
    out = {key: column.field_type for key, column in node.fields}
    for key, rel in node.relations:
        many = rel.kind != "parent"
        if rel.lift:  # its fields are the enclosing level's
            out.update(tree_shape(rel))
        elif rel.value is not None:  # one column: a value, or an array of them
            ft = rel.value.field_type
            out[key] = replace(ft, array=True) if many else ft
        else:
            out[key] = level(tree_shape(rel), array=many)
    return out


def table_shape(info: TableInfo, cfg: TableViewConfig) -> dict[str, FieldType]:
    """The shape of a table view's documents: its columns, as it selects them."""
    names = cfg.fields if cfg.fields is not None else list(info.columns)
    return {
        n: info.columns[n].field_type
        for n in names
        if n in info.columns and n not in cfg.exclude
    }


def view_shape(
    conn: psycopg.Connection[Any], name: str, cfg: TableViewConfig | AggregateViewConfig
) -> dict[str, FieldType]:
    """The shape of view ``name``'s documents, from the catalog at ``conn``.

    Raises:
        ConfigError: a table or column the view names is missing.
    """
    catalog = Catalog(conn)
    if isinstance(cfg, AggregateViewConfig):
        return tree_shape(build_tree(catalog, name, cfg))
    return table_shape(catalog.table(cfg.table, f"views.{name}.table"), cfg)


class ShapeReader:
    """Reads a view's shape from the source when a store first asks for it
    (then keeps it): building a sink does not connect to PostgreSQL."""

    def __init__(self, cfg: Config, view: str) -> None:
        self.cfg = cfg
        self.view = view
        self._shape: Shape | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Shape:
        """The view's shape (empty, with a warning, when a table or column
        it names is missing).

        Raises:
            TransientError: the source is not reachable.
        """
        with self._lock:
            if self._shape is None:
                source = self.cfg.source
                dsn = (source.lookup_dsn or source.dsn).get_secret_value()
                vcfg = self.cfg.effective_views()[self.view]
                try:
                    with psycopg.connect(
                        dsn, autocommit=True, connect_timeout=10
                    ) as conn:
                        self._shape = view_shape(conn, self.view, vcfg)
                except psycopg.OperationalError as exc:
                    raise TransientError(f"source not reachable: {exc}") from exc
                except ConfigError as exc:
                    # A table view's table may not exist yet: its store maps
                    # its fields as it would without a shape (dynamically).
                    logger.warning(
                        "view %s: no shape for its stores' native types: %s",
                        self.view,
                        exc,
                    )
                    self._shape = {}
                logger.debug(
                    "view shape read view=%s fields=%d", self.view, len(self._shape)
                )
            return self._shape
