"""From the JSON a view's SQL returns to the view's documents.

The statement of :mod:`pipeline.aggregate.plan` returns each root's document
as one ``json`` value whose leaves are column values in PostgreSQL's text
form. :class:`Converter` turns it into the document a table view would make
of the same rows (docs/types.md): each value is loaded with psycopg's loader
for its column's type and mapped by :func:`~pipeline.types.pg_value_to_json`.

A snapshot load converts millions of values, so the work per value is bound
once per node of the view's tree (:meth:`Converter.document` compiles a
node on first use): each column gets the one function its type needs, and
the types whose JSON form is their text (text, varchar, numeric...) or a
plain ``int`` skip the loader altogether; those shortcuts give exactly what
the loader and the mapping give (``tests/unit/test_aggregate_documents.py``
checks them against it). Integers and booleans come as JSON already, and a
node made of such values and texts only is used as parsed. The shaped levels
of a view are bound alike: a ``value`` level's items with its column's
function, a lifted parent's fields (in its enclosing level's object) with
theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types.hstore import HstoreLoader

from pipeline.aggregate.catalog import Column
from pipeline.aggregate.plan import NATIVE_OIDS, PAIRS_PER_CALL
from pipeline.aggregate.tree import Node
from pipeline.types import loads_json, pg_value_to_json

#: A column value's text -> its JSON form (None: the text itself).
ValueLoad = Callable[[str], Any] | None
#: A node's JSON object -> its document.
Build = Callable[[dict[str, Any]], dict[str, Any]]
#: A related row's JSON (an object, or a ``value`` level's value) -> its form.
Item = Callable[[Any], Any]

#: Types whose JSON form is PostgreSQL's text of the value: text, varchar,
#: bpchar (output text, through to_jsonb), name, "char", and numeric (its
#: output is plain notation, which is what the exact decimal form prints).
_AS_TEXT_OIDS = frozenset({25, 1043, 1042, 19, 18, 1700})
#: int2, int4, int8, oid: the loader's int() of the text.
_INT_OIDS = frozenset({21, 23, 20, 26})
#: The OID of ``json``, the type of a view's document column.
JSON_OID = 114
#: The OID of ``text[]``: the array of a type psycopg has no loader for (an
#: enum's, whose OID is the database's own) is read as its elements' texts,
#: as Debezium sends them.
TEXT_ARRAY_OID = 1009


class DocumentLoader(Loader):
    """Loads a view's document column with orjson (json's parser on what
    orjson refuses). Its leaves are strings, booleans and integers of at
    most 64 bits (:func:`~pipeline.aggregate.plan.document`), which both
    parsers read alike: no value of a float or of a wider number is parsed
    here (a json column's value is a string inside, loaded as its column)."""

    def load(self, data: Buffer) -> Any:
        return loads_json(data if isinstance(data, bytes | memoryview) else bytes(data))


class Values:
    """Turns a column value's text, as PostgreSQL prints it, into the value
    a decoded change event holds for that column.

    Args:
        context: whose type adapters load the values (a connection).
    """

    def __init__(self, context: AdaptContext) -> None:
        self.conn = context
        self._loads: dict[Column, ValueLoad] = {}

    def value(self, column: Column, text: str | None) -> Any:
        if text is None:
            return None
        load = self.load_of(column)
        return text if load is None else load(text)

    def load_of(self, column: Column) -> ValueLoad:
        """The function that maps ``column``'s text to its JSON form."""
        if column not in self._loads:
            self._loads[column] = self._bind(column)
        return self._loads[column]

    def _bind(self, column: Column) -> ValueLoad:
        if column.sql_type == "bit(1)":  # Debezium's boolean; psycopg has no loader
            return _bit
        if column.type_name != "hstore":
            if column.oid in _AS_TEXT_OIDS:
                return None
            if column.oid in _INT_OIDS:
                return int
        cls = self.conn.adapters.get_loader(column.oid, Format.TEXT)
        if column.type_name == "hstore":  # an extension type: no OID to map
            cls = HstoreLoader
        if cls is None and column.array:  # an enum's array: its labels
            cls = self.conn.adapters.get_loader(TEXT_ARRAY_OID, Format.TEXT)
        if cls is None:
            return None
        load = cls(column.oid, self.conn).load

        def loaded(text: str) -> Any:
            return pg_value_to_json(load(text.encode()))

        return loaded


def _bit(text: str) -> bool:
    return text == "1"


class Converter(Values):
    """Turns the JSON a view's SQL returns into the view's document.

    The statement (:func:`~pipeline.aggregate.plan.document`) writes each
    node's fields in the document's order, then its relations, and the
    types of :data:`~pipeline.aggregate.plan.NATIVE_OIDS` in their JSON
    form; a node whose every field is in its JSON form already, with only
    such nodes below it, is its own document (no copy is made). A ``value``
    level's items are its column's values, loaded as that column; a lifted
    parent's keys are in its enclosing level's object (merged as jsonb, so
    in jsonb's order): that level is always rebuilt, in its own order
    (:meth:`~pipeline.aggregate.tree.Node.output_names`).
    """

    def __init__(self, context: AdaptContext, root: Node) -> None:
        super().__init__(context)
        self.root = root
        self._builds: dict[int, Build | None] = {}

    def document(self, node: Node, raw: dict[str, Any]) -> dict[str, Any]:
        key = id(node)
        build = self._builds[key] if key in self._builds else self._compile(node)
        return raw if build is None else build(raw)

    def _bind(self, column: Column) -> ValueLoad:
        if column.oid in NATIVE_OIDS:
            return None
        return super()._bind(column)

    def _compile(self, node: Node, own: bool = True) -> Build | None:
        """The function that builds ``node``'s documents (and its relations');
        None when the JSON of a row is its document. Unless ``own`` (a lifted
        node, whose keys are picked out of its enclosing level's object),
        always a function."""
        fields = [(key, self.load_of(column)) for key, column in node.fields]
        relations: list[tuple[str, str, Item | None]] = []
        for key, rel in node.relations:
            if rel.lift:
                relations.append((key, _LIFT, self._compile(rel, own=False)))
            elif rel.value is not None:
                relations.append((key, _kind(rel), _item(self.load_of(rel.value))))
            else:
                relations.append((key, _kind(rel), self._compile(rel)))
        ordered = own and len(fields) + len(relations) <= PAIRS_PER_CALL
        if (
            ordered
            and all(load is None for _, load in fields)
            and all(kind != _LIFT and sub is None for _, kind, sub in relations)
        ):
            self._builds[id(node)] = None
            return None
        build = _build(fields, relations)
        self._builds[id(node)] = build
        return build


#: How a relation's JSON is read (:func:`_build`).
_PARENT, _ARRAY, _LIFT = "parent", "array", "lift"


def _kind(node: Node) -> str:
    return _PARENT if node.kind == "parent" else _ARRAY


def _item(load: ValueLoad) -> Item | None:
    """A ``value`` level's item (a column value, maybe null) to its JSON
    form; None when its JSON is that form."""
    if load is None:
        return None

    def item(text: Any) -> Any:
        return None if text is None else load(text)

    return item


def _build(
    fields: list[tuple[str, ValueLoad]],
    relations: list[tuple[str, str, Item | None]],
) -> Build:
    def build(raw: dict[str, Any]) -> dict[str, Any]:
        get = raw.get
        out = {
            key: text if (text := get(key)) is None or load is None else load(text)
            for key, load in fields
        }
        for key, kind, sub in relations:
            if kind is _LIFT:  # its keys are this level's (``sub`` always set)
                out.update(sub(raw) if sub is not None else {})
                continue
            got = get(key)
            if sub is None:
                out[key] = got if got is not None or kind is _PARENT else []
            elif kind is _PARENT:
                out[key] = None if got is None else sub(got)
            else:
                out[key] = [sub(item) for item in got] if got else []
        return out

    return build
