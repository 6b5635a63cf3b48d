"""Aggregate views keyed and linked by every kind of key, on the real stack.

Keys travel from the change events to the generated SQL as text (their JSON
form, docs/types.md): a ``bytea`` key is base64, a ``uuid``, ``numeric`` or
``timestamptz`` key its canonical string. Each must find its rows again, or
the re-read answers nothing and the root's document is deleted. The views
here have a ``bytea`` root key with a child linked by a ``bytea`` column (the
root is named directly) and a grandchild linked by the child's ``bytea`` key
(the root is found by SQL), and a composite key mixing ``uuid``,
``timestamptz`` and ``numeric``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.snapshot import SnapshotLog
from pipeline.views import build_views

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE files (
    id   bytea PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE chunks (
    id      bytea PRIMARY KEY,
    file_id bytea NOT NULL REFERENCES files ON DELETE CASCADE,
    seq     integer NOT NULL
);
CREATE TABLE marks (
    id       integer PRIMARY KEY,
    chunk_id bytea NOT NULL REFERENCES chunks ON DELETE CASCADE,
    label    text NOT NULL
);
CREATE TABLE ledgers (
    account uuid,
    opened  timestamptz,
    seq     numeric(12, 3),
    label   text NOT NULL,
    PRIMARY KEY (account, opened, seq)
);
CREATE TABLE entries (
    id      uuid PRIMARY KEY,
    account uuid NOT NULL,
    opened  timestamptz NOT NULL,
    seq     numeric(12, 3) NOT NULL,
    amount  numeric(12, 2) NOT NULL,
    FOREIGN KEY (account, opened, seq) REFERENCES ledgers ON DELETE CASCADE
);
ALTER TABLE chunks REPLICA IDENTITY FULL;
ALTER TABLE marks REPLICA IDENTITY FULL;
ALTER TABLE entries REPLICA IDENTITY FULL;
"""
TABLES = [
    "public.files",
    "public.chunks",
    "public.marks",
    "public.ledgers",
    "public.entries",
]
VIEWS: dict[str, Any] = {
    "files": {
        "kind": "aggregate",
        "table": "public.files",
        "embed": {
            "chunks": {
                "children": "public.chunks",
                "on": {"file_id": "id"},
                "order_by": ["seq"],
                "embed": {
                    "marks": {"children": "public.marks", "on": {"chunk_id": "id"}}
                },
            }
        },
    },
    "ledgers": {
        "kind": "aggregate",
        "table": "public.ledgers",
        "embed": {
            "entries": {
                "children": "public.entries",
                "on": {"account": "account", "opened": "opened", "seq": "seq"},
            }
        },
    },
}


def _blob(rng: random.Random) -> bytes:
    """Key bytes whose base64 has '+', '/' and padding, zero bytes included."""
    return bytes([0, 0xFB, 0xFF]) + rng.randbytes(rng.choice([4, 5, 6]))


class KeyLoad:
    """A seeded workload on both views: inserts, updates, moves, deletes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: list[bytes] = []
        self.chunks: list[bytes] = []
        self.marks = 0
        self.ledgers: list[tuple[uuid.UUID, datetime, Decimal]] = []
        self.entries: list[uuid.UUID] = []

    def _ledger_key(self) -> tuple[uuid.UUID, datetime, Decimal]:
        rng = self.rng
        tz = rng.choice([UTC, datetime.now().astimezone().tzinfo])
        opened = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6)
        )
        seq = Decimal(rng.randrange(1, 10**6)) / 1000  # trailing zeros kept: 1.500
        return uuid.UUID(int=rng.getrandbits(128)), opened.astimezone(tz), seq

    def add_file(self, conn: psycopg.Connection[Any]) -> None:
        fid = _blob(self.rng)
        conn.execute("INSERT INTO files VALUES (%s, %s)", (fid, f"f{len(self.files)}"))
        self.files.append(fid)
        for _ in range(self.rng.randrange(1, 4)):
            self.add_chunk(conn, fid)

    def add_chunk(self, conn: psycopg.Connection[Any], fid: bytes) -> None:
        cid = _blob(self.rng)
        conn.execute(
            "INSERT INTO chunks VALUES (%s, %s, %s)", (cid, fid, self.rng.randrange(99))
        )
        self.chunks.append(cid)
        self.marks += 1
        conn.execute("INSERT INTO marks VALUES (%s, %s, %s)", (self.marks, cid, "m"))

    def add_ledger(self, conn: psycopg.Connection[Any]) -> None:
        key = self._ledger_key()
        conn.execute("INSERT INTO ledgers VALUES (%s, %s, %s, 'l')", key)
        self.ledgers.append(key)
        for _ in range(self.rng.randrange(1, 3)):
            eid = uuid.UUID(int=self.rng.getrandbits(128))
            conn.execute(
                "INSERT INTO entries VALUES (%s, %s, %s, %s, %s)",
                (eid, *key, Decimal(self.rng.randrange(10**5)) / 100),
            )
            self.entries.append(eid)

    def seed(self, conn: psycopg.Connection[Any], n: int = 8) -> None:
        for _ in range(n):
            self.add_file(conn)
            self.add_ledger(conn)

    def step(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        # Cascading deletes remove children: take the live ids from the source.
        self.chunks = [r[0] for r in conn.execute("SELECT id FROM chunks ORDER BY id")]
        self.entries = [
            r[0] for r in conn.execute("SELECT id FROM entries ORDER BY id")
        ]
        marks = conn.execute("SELECT coalesce(max(id), 0) FROM marks").fetchone()
        self.marks = max(self.marks, marks[0] if marks else 0)
        kind = rng.randrange(10)
        if kind == 0 or not self.files:
            self.add_file(conn)
        elif kind == 1:
            conn.execute(
                "UPDATE files SET name = name || 'x' WHERE id = %s",
                (rng.choice(self.files),),
            )
        elif kind == 2 and self.chunks:  # a chunk moves to another file
            conn.execute(
                "UPDATE chunks SET file_id = %s, seq = seq + 1 WHERE id = %s",
                (rng.choice(self.files), rng.choice(self.chunks)),
            )
        elif kind == 3 and self.chunks and self.marks:  # a mark moves (by SQL)
            conn.execute(
                "UPDATE marks SET chunk_id = %s, label = label || 'y' WHERE id = %s",
                (rng.choice(self.chunks), rng.randrange(1, self.marks + 1)),
            )
        elif kind == 4 and len(self.files) > 2:
            fid = self.files.pop(rng.randrange(len(self.files)))
            conn.execute("DELETE FROM files WHERE id = %s", (fid,))
        elif kind == 5 and self.chunks:
            cid = self.chunks.pop(rng.randrange(len(self.chunks)))
            conn.execute("DELETE FROM chunks WHERE id = %s", (cid,))
        elif kind == 6 or not self.ledgers:
            self.add_ledger(conn)
        elif kind == 7:
            conn.execute(
                "UPDATE ledgers SET label = label || 'z' "
                "WHERE (account, opened, seq) = (%s, %s, %s)",
                rng.choice(self.ledgers),
            )
        elif kind == 8 and self.entries:  # an entry moves to another ledger
            conn.execute(
                "UPDATE entries SET (account, opened, seq) = (%s, %s, %s), "
                "amount = amount + 1 WHERE id = %s",
                (*rng.choice(self.ledgers), rng.choice(self.entries)),
            )
        elif len(self.ledgers) > 2:
            key = self.ledgers.pop(rng.randrange(len(self.ledgers)))
            conn.execute(
                "DELETE FROM ledgers WHERE (account, opened, seq) = (%s, %s, %s)", key
            )


def _defined(p: Any) -> dict[str, int]:
    """How many documents each view's SQL defines now."""
    views = build_views(p.config)
    prepare_views(views, p.dsn)
    reader = Reader(p.dsn)
    try:
        out = {}
        for name, view in views.items():
            assert isinstance(view, AggregateView)
            out[name] = len(view.documents(reader))
        return out
    finally:
        reader.close()


def test_aggregate_bytea_uuid_timestamptz_numeric_keys_converge(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    load = KeyLoad(seed=11)
    with p.connect() as conn:
        load.seed(conn)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    with p.connect() as conn:
        for _ in range(150):
            load.step(conn)
    p.wait_drained(timeout=180)
    defined = _defined(p)
    assert defined["files"] > 5, defined
    assert defined["ledgers"] > 5, defined
    p.assert_converged()
    assert not p.dead_letters()
    # `readside snapshot` pages through the roots by key: after a bytea key
    # (base64 in its state) the next chunk must start at that key's bytes.
    p.run_cli("snapshot", "files", "--chunk-size", "3")
    (state,) = SnapshotLog(p.config).read().values()
    assert state.rows == defined["files"], state
    p.assert_converged()
