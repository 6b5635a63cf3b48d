"""Numerics as ``Decimal128`` in MongoDB: the opt-in ``numeric: decimal128``.

By default a numeric is stored as readside writes it everywhere: its exact
text (``"8.20"``), which MongoDB compares as text. With the view's sink
option ``numeric: decimal128`` the MongoDB sink stores every numeric field
of the view's shape (:mod:`pipeline.fieldtypes`, nested levels and arrays
included) as ``Decimal128``: exact (34 significant digits, the scale kept:
``Decimal128("8.20")``), compared, sorted and summed as a number by MongoDB.
Reads turn each ``Decimal128`` back into the same text
(:func:`from_decimal128`), so a document reads back equal to its SQL
definition and sites get the same JSON from every store.

A value that ``Decimal128`` cannot hold exactly (more than 34 significant
digits) stays text. FerretDB v1, the stand-in for MongoDB of the local
stack, does not support ``Decimal128``: it drops the connection on the
first one (its log: ``invalid BSON type wirebson.Decimal128``), so the sink
checks the server when it opens (:func:`check_server`) and refuses to start
with a clear message rather than retry forever.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Sequence
from typing import Any

import pymongo.errors as perr
from bson.decimal128 import Decimal128
from pymongo.database import Database

from pipeline.errors import FatalError
from pipeline.jsonforms import format_decimal

#: the values of the option ``numeric``
MODES = ("string", "decimal128")
#: a collection of the sink's database that the server check writes a
#: document of its own into, reads, and deletes (it stays, empty: workers
#: started together check at once, and a drop of the collection by one
#: removed another's document before it read it back, which then refused
#: the server)
PROBE = "readside_decimal128_probe"

Path = tuple[str, ...]


def _to_decimal(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Decimal128(value)
        except (decimal.InvalidOperation, decimal.Inexact, ValueError, TypeError):
            return value  # more digits than Decimal128 holds, or not a number
    if isinstance(value, list):
        return [_to_decimal(v) for v in value]
    return value


def _convert(node: Any, path: Path) -> Any:
    if isinstance(node, list):
        return [_convert(item, path) for item in node]
    if not isinstance(node, dict) or path[0] not in node:
        return node
    out = dict(node)
    head, rest = path[0], path[1:]
    out[head] = _convert(node[head], rest) if rest else _to_decimal(node[head])
    return out


def to_decimal128(doc: dict[str, Any], paths: Sequence[Path]) -> dict[str, Any]:
    """A copy of ``doc`` whose numeric fields at ``paths`` (through nested
    objects and arrays of them) hold ``Decimal128``; ``doc`` is not changed."""
    for path in paths:
        doc = _convert(doc, path)
    return doc


def from_decimal128(value: Any) -> Any:
    """``value`` with every ``Decimal128`` in it back as readside's exact
    text (``Decimal128("8.20")`` -> ``"8.20"``)."""
    if isinstance(value, Decimal128):
        return format_decimal(value.to_decimal())
    if isinstance(value, dict):
        return {k: from_decimal128(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_decimal128(v) for v in value]
    return value


def query_number(value: Any) -> Any:
    """A filter's number as a ``Decimal128`` of its shortest text (``8.2``),
    which MongoDB compares exactly with stored ``Decimal128`` values (a
    double ``8.2`` is a little below ``Decimal128("8.20")``)."""
    if isinstance(value, float) and not isinstance(value, bool):
        return Decimal128(repr(value))
    return value


def check_server(db: Database[Any], sink: str) -> None:
    """Write, read and delete one ``Decimal128`` in :data:`PROBE`; a server that
    cannot (FerretDB v1 drops the connection) makes a FatalError.

    Raises:
        FatalError: the server refused the value while it answers a ping.
        PyMongoError: the server is not reachable (classified by the caller).
    """
    db.command("ping")
    try:
        mine = uuid.uuid4().hex
        db[PROBE].insert_one({"_id": mine, "n": Decimal128("8.20")})
        found = db[PROBE].find_one({"_id": mine}) or {}
        db[PROBE].delete_one({"_id": mine})
        refused = found.get("n") != Decimal128("8.20")
        reason = f"read back {found.get('n')!r}"
    except (perr.AutoReconnect, perr.OperationFailure) as exc:
        db.command("ping")  # still down: not the value's fault
        refused, reason = True, f"{type(exc).__name__}: {exc}"
    if refused:
        raise FatalError(
            f"mongodb sink {sink}: the server does not store Decimal128 values "
            f"({reason}), which sink option numeric: decimal128 needs (FerretDB "
            "v1 does not support them; use MongoDB, or numeric: string)"
        )
