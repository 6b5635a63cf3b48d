"""A film-rental schema for shaped aggregate documents, a random workload,
and an oracle that builds the expected documents from plain table reads.

films: a film's category names (many-to-many through film_category), its
language's name (many-to-one) and the stores that hold a copy (children).
rentals: a rental lifts its inventory's store and, through it, its film's
title and the name of the film's language, with no nesting level of its own.
categories: each film of a category lifts its language's name, renamed.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline.types import pg_row_to_json
from pipeline.verify import canonical

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

#: A lifted parent inside an array: each film of a category carries its
#: language's name as a field of its own, renamed.
CATEGORIES: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.categories",
    "embed": {
        "films": {
            "many_to_many": "public.films",
            "through": "public.film_category",
            "on": {"category_id": "category_id"},
            "target_on": {"film_id": "film_id"},
            "fields": ["title"],
            "order_by": ["title"],
            "embed": {
                "lang": {
                    "parent": "public.languages",
                    "on": {"language_id": "language_id"},
                    "lift": True,
                    "fields": ["name"],
                    "rename": {"name": "language"},
                }
            },
        }
    },
}
VIEWS = {"films": FILMS, "rentals": RENTALS, "categories": CATEGORIES}

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
        in_category: dict[int, list[tuple[str, int]]] = {}
        for link in rows("film_category"):
            cid, fid = link["category_id"], link["film_id"]
            names.setdefault(fid, []).append((categories[cid], cid))
            in_category.setdefault(cid, []).append((films[fid]["title"], fid))
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
        by_category = {
            str(cid): canonical(
                {
                    "category_id": cid,
                    "name": name,
                    "films": [
                        {
                            "title": title,
                            "language": languages.get(films[fid]["language_id"]),
                        }
                        for title, fid in sorted(in_category.get(cid, []))
                    ],
                }
            )
            for cid, name in categories.items()
        }
        return {"films": by_film, "rentals": by_rental, "categories": by_category}


def random_change(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    roll = rng.randrange(8)
    film, cat = rng.randrange(1, 4), rng.randrange(1, 4)
    if roll == 0:
        conn.execute(
            "UPDATE categories SET name = %s WHERE category_id = %s",
            (f"cat-{rng.randrange(50)}", cat),
        )
    elif roll == 1:
        conn.execute(
            "UPDATE languages SET name = %s WHERE language_id = %s",
            (f"lang-{rng.randrange(50)}", rng.randrange(1, 3)),
        )
    elif roll == 2:
        conn.execute(
            "UPDATE films SET title = %s, language_id = %s WHERE film_id = %s",
            (f"film-{rng.randrange(50)}", rng.choice([1, 2, None]), film),
        )
    elif roll == 3:
        conn.execute(
            "UPDATE inventory SET film_id = %s, store_id = %s WHERE inventory_id = %s",
            (film, rng.randrange(1, 5), rng.randrange(10, 14)),
        )
    elif roll == 4:
        conn.execute(
            "DELETE FROM film_category WHERE film_id = %s AND category_id = %s",
            (film, cat),
        )
    elif roll == 5:
        conn.execute(
            "INSERT INTO film_category VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (film, cat),
        )
    elif roll == 6:
        conn.execute(
            "UPDATE rentals SET inventory_id = %s WHERE rental_id = %s",
            (rng.choice([10, 11, 12, 13, None]), rng.randrange(100, 104)),
        )
    else:
        rid = rng.randrange(104, 10_000)
        conn.execute(
            "INSERT INTO rentals VALUES (%s, %s, 'eve') ON CONFLICT DO NOTHING",
            (rid, rng.randrange(10, 14)),
        )
