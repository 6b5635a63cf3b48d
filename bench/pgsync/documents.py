"""The documents both tools made of the same roots, compared field by field.

``--sample`` roots are loaded again by readside (:mod:`bench.pgsync.readside`)
and read back from both indices; every difference is counted by field and
kind (:func:`diff`: number or time formatting, array order, a field only one
tool writes).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import elasticsearch

from bench.pgsync.readside import load_readside_sample, readside_alias
from bench.pgsync.tool import PgSync
from bench.snapshot_setup import BenchSource

logger = logging.getLogger(__name__)

Doc = dict[str, Any]


def _mget(es: elasticsearch.Elasticsearch, index: str, ids: Sequence[int]) -> Doc:
    out: Doc = {}
    for i in range(0, len(ids), 500):
        resp = es.mget(index=index, ids=[str(x) for x in ids[i : i + 500]])
        for d in resp["docs"]:
            if d.get("found"):
                out[str(d["_id"])] = d["_source"]
    return out


def compare_documents(
    src: BenchSource, pgs: PgSync, es: elasticsearch.Elasticsearch, args: Any
) -> dict[str, Any]:
    cfg = src.configs["aggregate"]
    rng = random.Random(11)
    ids = sorted(rng.sample(range(1, args.roots + 1), min(args.sample, args.roots)))
    logger.info("documents: loading %d sample roots into readside again", len(ids))
    load_readside_sample(cfg, ids, args.chunk_size)
    alias = readside_alias(cfg)
    ours, theirs = _mget(es, alias, ids), _mget(es, pgs.index, ids)
    diffs: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], tuple[Any, Any]] = {}
    identical = 0
    equal: set[str] = set()
    for key in (str(i) for i in ids):
        if key not in ours or key not in theirs:
            continue
        every = list(diff(ours[key], theirs[key]))
        equal.update(path for path, kind, _a, _b in every if kind == "same")
        found = [d for d in every if d[1] != "same"]
        identical += not found
        for path, kind, a, b in found:
            examples.setdefault((path, kind), (a, b))
        diffs.update({(path, kind) for path, kind, _a, _b in found})  # once a root
    return {
        "sample": len(ids),
        "readside_found": len(ours),
        "pgsync_found": len(theirs),
        "identical": identical,
        # fields equal wherever compared (and never different)
        "equal_fields": sorted(equal - {path for path, _kind in diffs}),
        "readside_example": ours.get(str(ids[0])),
        "pgsync_example": theirs.get(str(ids[0])),
        "differences": [
            {
                "field": path,
                "kind": kind,
                "roots": n,
                "readside": examples[(path, kind)][0],
                "pgsync": examples[(path, kind)][1],
            }
            for (path, kind), n in sorted(diffs.items())
        ],
    }


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10 or not value[:4].isdigit():
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= 60 else text[:57] + "..."


def diff(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """Differences between readside's (``a``) and pgsync's (``b``) document:
    ``(field, kind, a value, b value)``; kind ``same`` marks equal leaves."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in b:
                yield sub, "only in readside", _short(a[key]), None
            elif key not in a:
                yield sub, "only in pgsync", None, _short(b[key])
            else:
                yield from diff(a[key], b[key], sub)
        return
    if isinstance(a, list) and isinstance(b, list):
        sub = f"{path}[]"
        by_id_a = _by_id(a)
        by_id_b = _by_id(b)
        if by_id_a is None or by_id_b is None:
            if len(a) != len(b):
                yield sub, "length", len(a), len(b)
            for x, y in zip(a, b, strict=False):
                yield from diff(x, y, sub)
            return
        if set(by_id_a) != set(by_id_b):
            yield sub, "different elements", sorted(by_id_a), sorted(by_id_b)
        elif list(by_id_a) != list(by_id_b):
            yield sub, "order (ids)", list(by_id_a), list(by_id_b)
        for key in by_id_a.keys() & by_id_b.keys():
            yield from diff(by_id_a[key], by_id_b[key], sub)
        return
    if a == b and type(a) is type(b):
        yield path, "same", a, b
        return
    da, db = _decimal(a), _decimal(b)
    if da is not None and db is not None and da == db:
        yield path, f"number form ({type(a).__name__} vs {type(b).__name__})", a, b
        return
    ta, tb = _instant(a), _instant(b)
    if ta is not None and tb is not None and ta == tb:
        yield path, "time form (same instant)", a, b
        return
    yield path, "value", _short(a), _short(b)


def _by_id(items: list[Any]) -> dict[Any, Any] | None:
    if not all(isinstance(x, dict) and "id" in x for x in items):
        return None
    return {x["id"]: x for x in items}
