"""Shaped aggregate documents against the real stack: arrays of scalars, a
scalar from a parent, and a parent's fields lifted into the enclosing level,
checked by hand-built documents, by the view's SQL and in every store, and
kept up to date when a category, a language, a film or an inventory changes.

films: a film's category names (many-to-many through film_category), its
language's name (many-to-one) and the stores that hold a copy (children).
rentals: a rental lifts its inventory's store and, through it, its film's
title and the name of the film's language, with no nesting level of its own.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from harness import SINKS
from psycopg.rows import dict_row

from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.types import pg_row_to_json
from pipeline.verify import canonical
from pipeline.views import build_views
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE languages (
    language_id integer PRIMARY KEY,
    name        text NOT NULL
);
CREATE TABLE films (
    film_id     integer PRIMARY KEY,
    title       text NOT NULL,
    language_id integer REFERENCES languages
);
CREATE TABLE categories (
    category_id integer PRIMARY KEY,
    name        text NOT NULL
);
CREATE TABLE film_category (
    film_id     integer REFERENCES films ON DELETE CASCADE,
    category_id integer REFERENCES categories ON DELETE CASCADE,
    PRIMARY KEY (film_id, category_id)
);
CREATE TABLE inventory (
    inventory_id integer PRIMARY KEY,
    film_id      integer NOT NULL REFERENCES films,
    store_id     integer NOT NULL
);
CREATE TABLE rentals (
    rental_id    integer PRIMARY KEY,
    inventory_id integer REFERENCES inventory,
    customer     text NOT NULL
);
ALTER TABLE inventory REPLICA IDENTITY FULL;
ALTER TABLE films REPLICA IDENTITY FULL;
"""

TABLES = [
    "public.languages",
    "public.films",
    "public.categories",
    "public.film_category",
    "public.inventory",
    "public.rentals",
]

FILMS: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.films",
    "fields": ["film_id", "title"],
    "embed": {
        "categories": {
            "many_to_many": "public.categories",
            "through": "public.film_category",
            "on": {"film_id": "film_id"},
            "target_on": {"category_id": "category_id"},
            "value": "name",
            "order_by": ["name"],
        },
        "language": {
            "parent": "public.languages",
            "on": {"language_id": "language_id"},
            "value": "name",
        },
        "stores": {
            "children": "public.inventory",
            "on": {"film_id": "film_id"},
            "value": "store_id",
            "order_by": ["store_id desc"],
        },
    },
}

RENTALS: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.rentals",
    "embed": {
        "inventory": {
            "parent": "public.inventory",
            "on": {"inventory_id": "inventory_id"},
            "lift": True,
            "fields": ["store_id"],
            "embed": {
                "film": {
                    "parent": "public.films",
                    "on": {"film_id": "film_id"},
                    "lift": True,
                    "fields": ["title"],
                    "embed": {
                        "language": {
                            "parent": "public.languages",
                            "on": {"language_id": "language_id"},
                            "value": "name",
                        }
                    },
                }
            },
        }
    },
}

SEED = """
INSERT INTO languages VALUES (1, 'English'), (2, 'Italian');
INSERT INTO films VALUES (1, 'Alpha', 1), (2, 'Beta', 2), (3, 'Gamma', NULL);
INSERT INTO categories VALUES (1, 'Music'), (2, 'Drama'), (3, 'Action');
INSERT INTO film_category VALUES (1, 1), (1, 2), (2, 3);
INSERT INTO inventory VALUES (10, 1, 1), (11, 1, 2), (12, 2, 1), (13, 3, 2);
INSERT INTO rentals VALUES
    (100, 10, 'ann'), (101, 12, 'bob'), (102, 13, 'cy'), (103, NULL, 'dee');
"""


def expected_documents(dsn: str) -> dict[str, dict[str, str]]:
    """Both views' documents from plain table reads (canonical JSON)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

        def rows(table: str) -> list[dict[str, Any]]:
            return [pg_row_to_json(r) for r in cur.execute(f"SELECT * FROM {table}")]

        languages = {r["language_id"]: r["name"] for r in rows("languages")}
        categories = {r["category_id"]: r["name"] for r in rows("categories")}
        films = {r["film_id"]: r for r in rows("films")}
        inventory = {r["inventory_id"]: r for r in rows("inventory")}
        names: dict[int, list[tuple[str, int]]] = {}
        for link in rows("film_category"):
            cid = link["category_id"]
            names.setdefault(link["film_id"], []).append((categories[cid], cid))
        stores: dict[int, list[tuple[int, int]]] = {}
        for inv in inventory.values():
            stores.setdefault(inv["film_id"], []).append(
                (-inv["store_id"], inv["inventory_id"])
            )
        by_film = {
            str(f["film_id"]): canonical(
                {
                    "film_id": f["film_id"],
                    "title": f["title"],
                    "categories": [n for n, _ in sorted(names.get(f["film_id"], []))],
                    "language": languages.get(f["language_id"]),
                    "stores": [-s for s, _ in sorted(stores.get(f["film_id"], []))],
                }
            )
            for f in films.values()
        }
        by_rental = {}
        for r in rows("rentals"):
            inv = inventory.get(r["inventory_id"]) or {}
            film = films.get(inv.get("film_id")) or {}
            doc = {
                **r,
                "store_id": inv.get("store_id"),
                "title": film.get("title"),
                "language": languages.get(film.get("language_id")),
            }
            by_rental[str(r["rental_id"])] = canonical(doc)
        return {"films": by_film, "rentals": by_rental}


def view_sql_documents(p: Any) -> dict[str, dict[str, str]]:
    views = build_views(p.config, only=["films", "rentals"])
    prepare_views(views, p.dsn)
    reader = Reader(p.dsn)
    out = {}
    try:
        for name, view in views.items():
            assert isinstance(view, AggregateView)
            docs = view.documents(reader)
            out[name] = {k: canonical(v) for k, v in docs.items()}
    finally:
        reader.close()
    return out


def stored(p: Any, view: str, ident: str) -> dict[str, Any]:
    """The document ``ident`` of ``view`` as each store holds it."""
    sinks = build_sinks(p.config, list(SINKS))
    out = {}
    for name, sink in sinks.items():
        sink.open()
        try:
            got = sink.fetch(view, [ident])[ident]
            out[name] = got.doc
        finally:
            sink.close()
    return out


def assert_all_agree(p: Any) -> dict[str, dict[str, str]]:
    oracle = expected_documents(p.dsn)
    assert view_sql_documents(p) == oracle
    p.assert_converged()
    return oracle


def test_shaped_embeds_are_built_and_maintained_in_every_store(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"films": FILMS, "rentals": RENTALS})
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute(SEED)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    assert_all_agree(p)
    film = {
        "film_id": 1,
        "title": "Alpha",
        "categories": ["Drama", "Music"],
        "language": "English",
        "stores": [2, 1],
    }
    rental = {
        "rental_id": 100,
        "inventory_id": 10,
        "customer": "ann",
        "store_id": 1,
        "title": "Alpha",
        "language": "English",
    }
    for sink, doc in stored(p, "films", "1").items():
        assert doc == film, sink
    for sink, doc in stored(p, "rentals", "100").items():
        assert doc == rental, sink
    nothing = {"store_id": None, "title": None, "language": None}
    for sink, doc in stored(p, "rentals", "103").items():
        bare = {"rental_id": 103, "inventory_id": None, "customer": "dee"}
        assert doc == bare | nothing, sink

    # Each change reaches every root that embeds the changed row.
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute("UPDATE categories SET name = 'Comedy' WHERE category_id = 1")
        conn.execute("UPDATE languages SET name = 'Inglese' WHERE language_id = 1")
        conn.execute("UPDATE films SET title = 'Alpha II' WHERE film_id = 1")
        conn.execute("UPDATE inventory SET store_id = 7 WHERE inventory_id = 10")
        conn.execute("UPDATE inventory SET film_id = 3 WHERE inventory_id = 12")
        conn.execute("UPDATE films SET language_id = 2 WHERE film_id = 3")
        conn.execute("DELETE FROM film_category WHERE film_id = 1 AND category_id = 2")
        conn.execute("INSERT INTO film_category VALUES (3, 2), (3, 1)")
        conn.execute("UPDATE films SET language_id = NULL WHERE film_id = 2")
        conn.execute("UPDATE rentals SET inventory_id = 11 WHERE rental_id = 103")
    p.wait_drained(timeout=180)
    assert_all_agree(p)
    film3 = {
        "film_id": 3,
        "title": "Gamma",
        "categories": ["Comedy", "Drama"],
        "language": "Italian",
        "stores": [2, 1],
    }
    for sink, doc in stored(p, "films", "3").items():
        assert doc == film3, sink
    for sink, doc in stored(p, "rentals", "100").items():
        changed = {"store_id": 7, "title": "Alpha II", "language": "Inglese"}
        assert doc == rental | changed, sink
    for sink, doc in stored(p, "rentals", "101").items():
        assert doc["title"] == "Gamma", sink
        assert doc["language"] == "Italian", sink

    # A rename fans out again through the deepest chain (rental -> inventory
    # -> film -> language), and a deleted category leaves every array.
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute("UPDATE languages SET name = 'Italiano' WHERE language_id = 2")
        conn.execute("DELETE FROM categories WHERE category_id = 2")
    p.wait_drained(timeout=180)
    oracle = assert_all_agree(p)
    assert '"language":"Italiano"' in oracle["rentals"]["101"]
    assert oracle["films"]["3"].count("Drama") == 0
    assert not p.dead_letters()


def test_config_check_prints_the_shaped_sql(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"films": FILMS, "rentals": RENTALS})
    out = p.run_cli("config", "check", timeout=120).stdout
    # An array of scalars aggregates the column itself, a parent's value is a
    # scalar subquery, and a lifted parent is merged into its enclosing object.
    assert "jsonb_agg(" in out
    assert '"name"::text ORDER BY' in out
    assert '"store_id"::text ORDER BY' in out
    assert "LEFT JOIN" in out
    assert " || (SELECT" in out
    assert "'categories'" in out
    assert "'inventory'" not in out
