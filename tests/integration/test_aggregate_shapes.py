"""Shaped aggregate documents against the real stack: arrays of scalars, a
scalar from a parent, and a parent's fields lifted into the enclosing level,
checked by hand-built documents, by the view's SQL and in every store, and
kept up to date when a category, a language, a film or an inventory changes
(the schema and its views: shapes_model.py).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import psycopg
import pytest
from harness import SINKS
from shapes_model import (
    FILMS,
    RENTALS,
    SCHEMA,
    SEED,
    TABLES,
    VIEWS,
    expected_documents,
    random_change,
)

from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.catalog import Catalog
from pipeline.aggregate.reader import Reader
from pipeline.aggregate.tree import build_tree
from pipeline.errors import ConfigError
from pipeline.verify import canonical
from pipeline.viewconfig import AggregateViewConfig
from pipeline.views import build_views
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration


def view_sql_documents(p: Any) -> dict[str, dict[str, str]]:
    views = build_views(p.config, only=list(VIEWS))
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
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
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
    drama = [{"title": "Gamma", "language": "Italian"}]
    for sink, doc in stored(p, "categories", "2").items():
        assert doc == {"category_id": 2, "name": "Drama", "films": drama}, sink

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
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    out = p.run_cli("config", "check", timeout=120).stdout
    # An array of scalars aggregates the column itself (json; an integer as
    # itself), a parent's value is a scalar subquery, and a lifted parent is
    # merged into its enclosing object as jsonb, the level cast back to json.
    assert "json_agg(" in out
    assert "jsonb_agg(" not in out
    assert '"name"::text ORDER BY' in out
    assert '"store_id" ORDER BY' in out
    assert "LEFT JOIN" in out
    assert " || (SELECT jsonb_build_object(" in out
    assert "))::json ORDER BY" in out
    assert "'categories'" in out
    assert "'inventory'" not in out


def test_shaped_embeds_random_workload_two_workers_converge(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute(SEED)
    p.apply_connector()
    p.start_worker()
    p.start_worker()
    rng = random.Random(13)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(150):
            with conn.transaction():
                for _ in range(rng.randrange(1, 4)):
                    random_change(conn, rng)
    p.wait_drained(timeout=180)
    assert_all_agree(p)
    assert not p.dead_letters()


def test_shaped_levels_checked_against_the_catalog_name_the_field(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"films": FILMS})
    bad_value = copy.deepcopy(FILMS)
    bad_value["embed"]["language"]["value"] = "label"
    # A lifted field that meets a field of the level it is lifted into.
    clash = copy.deepcopy(RENTALS)
    clash["rename"] = {"customer": "title"}
    with p.connect() as conn:
        with pytest.raises(ConfigError) as info:
            build_tree(
                Catalog(conn), "films", AggregateViewConfig(**bad_value, sinks=["x"])
            )
        assert "views.films.embed.language.value: table public.languages has no " in (
            str(info.value)
        )
        with pytest.raises(ConfigError) as info:
            build_tree(
                Catalog(conn), "rentals", AggregateViewConfig(**clash, sinks=["x"])
            )
        assert str(info.value) == (
            "views.rentals: field name(s) used twice (with the fields lifted "
            "from embed.inventory): title"
        )
