"""A ticketing schema of the project's own design, a seeded random workload
on every table, and an oracle that builds every view's documents from plain
table reads (no view SQL), for ``test_real_schema.py``.

countries <- cities <- venues <- events: a three-level parent chain above
each event, lifted into the ``events`` documents (``venue``, ``city``,
``country``) and, one level deeper, into the ``tickets`` documents.
events <-> performers through ``event_performers`` (a composite key): a
many-to-many shaped as an array of names. ``tickets`` is range-partitioned
by ``sold_at`` (two years and a default partition) with the composite key
``(ticket_id, sold_at)``: its aggregate view names documents by
``ticket_id`` alone, its table view by the whole key; each event lists its
tickets' ids and tiers (arrays of scalars from the partitioned child, the
tiers in the enum's order). Columns: enums (``status``, ``tier``), an enum
array (``perks``), arrays (``tags text[]``, ``seats int[]``; labels and tags
hold commas, quotes, a backslash, braces, ``NULL``), numerics and
timestamptz (with microseconds).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pipeline.types import pg_row_to_json
from pipeline.verify import canonical

SCHEMA = """
CREATE TYPE event_status AS ENUM ('draft', 'on_sale', 'sold_out', 'cancelled');
CREATE TYPE ticket_tier AS ENUM ('standard', 'premium', 'vip');
CREATE TYPE perk AS ENUM (
    'parking', 'drink', 'meet & greet', 'after-party, late', 'vip "gold"', 'NULL'
);
CREATE TABLE countries (
    country_id integer PRIMARY KEY,
    name       text NOT NULL
);
CREATE TABLE cities (
    city_id    integer PRIMARY KEY,
    country_id integer NOT NULL REFERENCES countries,
    name       text NOT NULL
);
CREATE TABLE venues (
    venue_id integer PRIMARY KEY,
    city_id  integer NOT NULL REFERENCES cities,
    name     text NOT NULL,
    capacity integer NOT NULL
);
CREATE TABLE performers (
    performer_id integer PRIMARY KEY,
    name         text NOT NULL
);
CREATE TABLE events (
    event_id   integer PRIMARY KEY,
    venue_id   integer NOT NULL REFERENCES venues,
    title      text NOT NULL,
    status     event_status NOT NULL,
    tags       text[] NOT NULL DEFAULT '{}',
    base_price numeric(8, 2) NOT NULL,
    starts_at  timestamptz NOT NULL
);
CREATE TABLE event_performers (
    event_id     integer REFERENCES events ON DELETE CASCADE,
    performer_id integer REFERENCES performers ON DELETE CASCADE,
    PRIMARY KEY (event_id, performer_id)
);
CREATE TABLE tickets (
    ticket_id bigint NOT NULL,
    sold_at   timestamptz NOT NULL,
    event_id  integer NOT NULL REFERENCES events ON DELETE CASCADE,
    tier      ticket_tier NOT NULL,
    price     numeric(8, 2) NOT NULL,
    seats     integer[] NOT NULL,
    perks     perk[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (ticket_id, sold_at)
) PARTITION BY RANGE (sold_at);
CREATE TABLE tickets_2024 PARTITION OF tickets
    FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00');
CREATE TABLE tickets_2025 PARTITION OF tickets
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE tickets_other PARTITION OF tickets DEFAULT;
-- events list their tickets by event_id, outside the tickets' key: every
-- leaf logs the full old row (the root's setting does not reach its leaves).
ALTER TABLE tickets REPLICA IDENTITY FULL;
ALTER TABLE tickets_2024 REPLICA IDENTITY FULL;
ALTER TABLE tickets_2025 REPLICA IDENTITY FULL;
ALTER TABLE tickets_other REPLICA IDENTITY FULL;
"""

TABLES = [
    "public.countries",
    "public.cities",
    "public.venues",
    "public.performers",
    "public.events",
    "public.event_performers",
    "public.tickets",
]


def _place(level: str, key: str, below: dict[str, Any] | None = None) -> Any:
    """A lifted parent level whose ``name`` becomes the field ``level``."""
    out: dict[str, Any] = {
        "parent": f"public.{key}",
        "lift": True,
        "fields": ["name"],
        "rename": {"name": level},
    }
    return out | (below or {})


#: venue -> city -> country, each lifted into the enclosing level.
VENUE_CHAIN: dict[str, Any] = _place(
    "venue",
    "venues",
    {
        "on": {"venue_id": "venue_id"},
        "embed": {
            "city": _place(
                "city",
                "cities",
                {
                    "on": {"city_id": "city_id"},
                    "embed": {
                        "country": _place(
                            "country", "countries", {"on": {"country_id": "country_id"}}
                        )
                    },
                },
            )
        },
    },
)

EVENTS: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.events",
    "where": "status <> 'cancelled'",  # an enum change adds or removes one
    "embed": {
        "performers": {
            "many_to_many": "public.performers",
            "through": "public.event_performers",
            "on": {"event_id": "event_id"},
            "target_on": {"performer_id": "performer_id"},
            "value": "name",
            "order_by": ["name"],
        },
        "place": VENUE_CHAIN,
        "tiers": {  # an enum's values, in the enum's order
            "children": "public.tickets",
            "on": {"event_id": "event_id"},
            "value": "tier",
            "order_by": ["tier desc"],
        },
        "ticket_ids": {
            "children": "public.tickets",
            "on": {"event_id": "event_id"},
            "value": "ticket_id",
            "order_by": ["ticket_id desc"],
        },
    },
}

#: ticket -> event -> venue -> city: the event's title and status, its
#: venue's name and its city's name, all in the ticket's own level.
TICKETS: dict[str, Any] = {
    "kind": "aggregate",
    "table": "public.tickets",
    "id": ["ticket_id"],
    "embed": {
        "event": {
            "parent": "public.events",
            "on": {"event_id": "event_id"},
            "lift": True,
            "fields": ["title", "status", "tags"],
            "rename": {"status": "event_status", "tags": "event_tags"},
            "embed": {
                "venue": _place(
                    "venue",
                    "venues",
                    {
                        "on": {"venue_id": "venue_id"},
                        "embed": {
                            "city": {
                                "parent": "public.cities",
                                "on": {"city_id": "city_id"},
                                "value": "name",
                            }
                        },
                    },
                )
            },
        }
    },
}

VIEWS: dict[str, Any] = {
    "events": EVENTS,
    "tickets": TICKETS,
    "event_rows": {"table": "public.events"},
    "ticket_rows": {"table": "public.tickets", "filter": "tier != 'standard'"},
}

#: labels and tags with what an array's text must quote: a comma, a quote,
#: a backslash, braces, a space, the word NULL
PERKS = ["parking", "drink", "meet & greet", "after-party, late", 'vip "gold"', "NULL"]
TIERS = ["standard", "premium", "vip"]
STATUSES = ["draft", "on_sale", "sold_out", "cancelled"]
TAGS = [
    "rock",
    "jazz",
    "all ages",
    "a,b",
    'say "hi"',
    "back\\slash",
    "{x}",
    "NULL",
    "café",
]
#: the years tickets are sold in: 2024 and 2025 have partitions of their
#: own, the others go to the default partition
YEARS = (2024, 2025, 2026)


#: Every kind of change the workload makes (tickets are inserted and moved
#: between partitions twice as often as the rest is changed).
KINDS = (
    *("event", "status", "tag", "untag", "event_venue", "price", "delete_event"),
    *("link", "unlink", "performer"),  # the many-to-many
    *("venue", "city", "country"),  # a rename at each level of the chain
    *("venue_city", "city_country"),  # a level moved under another parent
    *("ticket", "ticket_update", "ticket_move", "ticket_event", "delete_ticket"),
)
CHANGES = (*KINDS, "ticket", "ticket_move")


def _instant(rng: random.Random, year: int) -> datetime:
    start = datetime(year, 1, 1, tzinfo=UTC)
    moment = timedelta(seconds=rng.randrange(365 * 24 * 3600))
    return (
        start + moment + timedelta(microseconds=rng.choice([0, rng.randrange(10**6)]))
    )


def _money(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(500, 20_000)) / 100


class TicketingLoad:
    """Seeded rows and seeded random changes of every table."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_event = 1000
        self.next_ticket = 100_000
        self.done: set[str] = set()

    def seed(self, conn: psycopg.Connection[Any]) -> None:
        """Rows that exist before the pipeline starts."""
        rng = self.rng
        conn.execute(
            "INSERT INTO countries VALUES (1, 'Italy'), (2, 'Norway'), (3, 'Chile');"
            "INSERT INTO cities VALUES (1, 1, 'Turin'), (2, 1, 'Bari'),"
            " (3, 2, 'Bergen'), (4, 3, 'Valparaíso'), (5, 3, 'Arica');"
            "INSERT INTO performers SELECT i, 'performer ' || i"
            " FROM generate_series(1, 12) AS i;"
        )
        for venue in range(1, 9):
            conn.execute(
                "INSERT INTO venues VALUES (%s, %s, %s, %s)",
                (venue, rng.randrange(1, 6), f"hall {venue}", rng.randrange(50, 5000)),
            )
        for _ in range(40):
            self._insert_event(conn)
        for _ in range(300):
            self._insert_ticket(conn)

    def _event_ids(self, conn: psycopg.Connection[Any]) -> list[int]:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY 1")]

    def _ticket_keys(self, conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT ticket_id, sold_at FROM tickets ORDER BY 1, 2"
        ).fetchall()

    def _insert_event(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        self.next_event += 1
        conn.execute(
            "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                self.next_event,
                rng.randrange(1, 9),
                f"show {self.next_event}",
                rng.choice(STATUSES),
                rng.sample(TAGS, rng.randrange(0, 3)),
                _money(rng),
                _instant(rng, rng.choice(YEARS)),
            ),
        )
        for performer in rng.sample(range(1, 13), rng.randrange(0, 4)):
            conn.execute(
                "INSERT INTO event_performers VALUES (%s, %s)",
                (self.next_event, performer),
            )

    def _insert_ticket(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        events = self._event_ids(conn)
        if not events:
            return
        self.next_ticket += 1
        conn.execute(
            "INSERT INTO tickets VALUES (%s, %s, %s, %s, %s, %s, %s::perk[])",
            (
                self.next_ticket,
                _instant(rng, rng.choice(YEARS)),
                rng.choice(events),
                rng.choice(TIERS),
                _money(rng),
                [rng.randrange(1, 500) for _ in range(rng.randrange(1, 4))],
                rng.sample(PERKS, rng.randrange(0, 3)),
            ),
        )

    def renames(self, conn: psycopg.Connection[Any], tables: Sequence[str]) -> None:
        """Rename every row of ``tables``, one transaction each. Made on a
        drained pipeline with nothing else, the renames of the chains' tops
        (cities, countries) are the last change of every document: one the
        pipeline failed to carry to a root is not hidden by a re-read that
        a change lower in the chain, in the same batch, caused."""
        tag = self.rng.randrange(1000)
        for table in tables:
            conn.execute(
                sql.SQL("UPDATE {} SET name = name || {}").format(
                    sql.Identifier(table), sql.Literal(f" ({tag})")
                )
            )
        self.done.add("renames")

    def step(self, conn: psycopg.Connection[Any], pause_s: float = 0.02) -> None:
        """One transaction of one to three random changes, then a pause (so
        that the worker's batches interleave with the workload)."""
        with conn.transaction():
            for _ in range(self.rng.randrange(1, 4)):
                self.change(conn)
        time.sleep(pause_s)

    def change(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        kind = rng.choice(CHANGES)
        events = self._event_ids(conn)
        event = rng.choice(events) if events else None
        keys = self._ticket_keys(conn)
        key = rng.choice(keys) if keys else None
        performer = rng.randrange(1, 13)
        if kind == "event" or event is None:
            self._insert_event(conn)
            kind = "event"
        elif kind == "status":
            conn.execute(
                "UPDATE events SET status = %s WHERE event_id = %s",
                (rng.choice(STATUSES), event),
            )
        elif kind == "tag":
            conn.execute(
                "UPDATE events SET tags = array_append(tags, %s::text) "
                "WHERE event_id = %s",
                (rng.choice([*TAGS, None]), event),  # a NULL element too
            )
        elif kind == "untag":
            conn.execute(
                "UPDATE events SET tags = array_remove(tags, %s) WHERE event_id = %s",
                (rng.choice(TAGS), event),
            )
        elif kind == "event_venue":
            conn.execute(
                "UPDATE events SET venue_id = %s, starts_at = starts_at + %s "
                "WHERE event_id = %s",
                (rng.randrange(1, 9), timedelta(minutes=rng.randrange(1, 999)), event),
            )
        elif kind == "price":
            conn.execute(
                "UPDATE events SET base_price = %s, title = %s WHERE event_id = %s",
                (_money(rng), f"show {event} take {rng.randrange(99)}", event),
            )
        elif kind == "delete_event":
            conn.execute("DELETE FROM events WHERE event_id = %s", (event,))
        elif kind == "link":
            conn.execute(
                "INSERT INTO event_performers VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (event, performer),
            )
        elif kind == "unlink":
            conn.execute(
                "DELETE FROM event_performers WHERE event_id = %s "
                "AND performer_id = (SELECT min(performer_id) FROM event_performers "
                "WHERE event_id = %s)",
                (event, event),
            )
        elif kind == "performer":
            conn.execute(
                "UPDATE performers SET name = %s WHERE performer_id = %s",
                (f"act {rng.randrange(100)}", performer),
            )
        elif kind in ("venue", "city", "country"):  # a rename at each level
            table, top = {"venue": ("venues", 8), "city": ("cities", 5)}.get(
                kind, ("countries", 3)
            )
            conn.execute(
                f"UPDATE {table} SET name = %s WHERE {kind}_id = %s",
                (f"{kind} {rng.randrange(100)}", rng.randrange(1, top + 1)),
            )
        elif kind == "venue_city":
            conn.execute(
                "UPDATE venues SET city_id = %s, capacity = capacity + 1 "
                "WHERE venue_id = %s",
                (rng.randrange(1, 6), rng.randrange(1, 9)),
            )
        elif kind == "city_country":
            conn.execute(
                "UPDATE cities SET country_id = %s WHERE city_id = %s",
                (rng.randrange(1, 4), rng.randrange(1, 6)),
            )
        elif kind == "ticket" or key is None:
            self._insert_ticket(conn)
            kind = "ticket"
        elif kind == "ticket_update":
            conn.execute(
                "UPDATE tickets SET tier = %s, price = price + 1, "
                "seats = array_append(seats, %s), "
                "perks = array_remove(perks, %s::perk) || %s::perk "
                "WHERE ticket_id = %s AND sold_at = %s",
                (
                    rng.choice(TIERS),
                    rng.randrange(1, 500),
                    rng.choice(PERKS),
                    rng.choice(PERKS),
                    *key,
                ),
            )
        elif kind == "ticket_move":  # the partition key: another leaf
            other = [y for y in YEARS if y != key[1].year]
            conn.execute(
                "UPDATE tickets SET sold_at = %s WHERE ticket_id = %s AND sold_at = %s",
                (_instant(rng, rng.choice(other)), *key),
            )
        elif kind == "ticket_event":
            conn.execute(
                "UPDATE tickets SET event_id = %s "
                "WHERE ticket_id = %s AND sold_at = %s",
                (event, *key),
            )
        else:
            conn.execute(
                "DELETE FROM tickets WHERE ticket_id = %s AND sold_at = %s", key
            )
            kind = "delete_ticket"
        self.done.add(kind)


def _key_id(*values: Any) -> str:
    """A composite key's document id, as docs/configuration.md spells it."""
    return ":".join(str(v).replace("%", "%25").replace(":", "%3A") for v in values)


def expected_documents(dsn: str) -> dict[str, dict[str, str]]:
    """Every view's documents from plain table reads (canonical JSON)."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

        def rows(query: str) -> list[dict[str, Any]]:
            return [pg_row_to_json(r) for r in cur.execute(query)]  # type: ignore[arg-type]

        countries = {
            r["country_id"]: r["name"] for r in rows("SELECT * FROM countries")
        }
        cities = {r["city_id"]: r for r in rows("SELECT * FROM cities")}
        venues = {r["venue_id"]: r for r in rows("SELECT * FROM venues")}
        performers = {
            r["performer_id"]: r["name"] for r in rows("SELECT * FROM performers")
        }
        events = rows("SELECT * FROM events")
        # an enum array is read as text[] (the labels)
        tickets = rows("SELECT t.*, perks::text[] AS perks FROM tickets t")
        acts: dict[int, list[tuple[str, int]]] = {}
        for link in rows("SELECT * FROM event_performers"):
            pid = link["performer_id"]
            acts.setdefault(link["event_id"], []).append((performers[pid], pid))
        sold: dict[int, list[int]] = {}
        # tiers: the enum's order, descending, then the tickets' key
        tiers: dict[int, list[tuple[int, int, str]]] = {}
        for t in tickets:
            sold.setdefault(t["event_id"], []).append(t["ticket_id"])
            rank = -TIERS.index(t["tier"])
            tiers.setdefault(t["event_id"], []).append(
                (rank, t["ticket_id"], t["tier"])
            )

        def place(venue_id: int) -> dict[str, Any]:
            venue = venues[venue_id]
            city = cities[venue["city_id"]]
            return {
                "venue": venue["name"],
                "city": city["name"],
                "country": countries[city["country_id"]],
            }

        by_event = {e["event_id"]: e for e in events}
        out: dict[str, dict[str, str]] = {
            "event_rows": {str(e["event_id"]): canonical(e) for e in events},
            "ticket_rows": {
                _key_id(t["ticket_id"], t["sold_at"]): canonical(t)
                for t in tickets
                if t["tier"] != "standard"
            },
            "events": {},
            "tickets": {},
        }
        for e in events:
            if e["status"] == "cancelled":  # outside the view's where
                continue
            doc = {
                **e,
                "performers": [n for n, _ in sorted(acts.get(e["event_id"], []))],
                **place(e["venue_id"]),
                "tiers": [t for _, _, t in sorted(tiers.get(e["event_id"], []))],
                "ticket_ids": sorted(sold.get(e["event_id"], []), reverse=True),
            }
            out["events"][str(e["event_id"])] = canonical(doc)
        for t in tickets:
            event = by_event[t["event_id"]]
            where = place(event["venue_id"])
            doc = {
                **t,
                "title": event["title"],
                "event_status": event["status"],
                "event_tags": event["tags"],
                "venue": where["venue"],
                "city": where["city"],
            }
            out["tickets"][str(t["ticket_id"])] = canonical(doc)
        return out
