"""What :func:`pipeline.aggregate.identity.problems` says of a table, or a
partition of it, that lost REPLICA IDENTITY FULL (the catalog is asked on
the stack: tests/integration/test_replica_identity.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.aggregate import identity

pytestmark = pytest.mark.unit


class Catalog:
    def __init__(self, rows: dict[str, list[tuple[str, str]]]) -> None:
        self.rows = rows

    def execute(self, query: str, params: dict[str, str]) -> Any:
        rows = self.rows.get(params["t"], [])
        return type("Cursor", (), {"fetchall": lambda _self: rows})()


def test_a_table_or_partition_without_full_identity_names_the_way_back() -> None:
    conn = Catalog(
        {
            "public.pets": [("public.pets", "d")],
            "public.visits": [("public.visits_2027", "n")],
            "public.toys": [],
        }
    )
    needs = {
        "public.visits": ["owners"],
        "public.pets": ["owners", "pet_docs"],
        "public.toys": ["owners"],
    }
    pets, visits = identity.problems(conn, needs)  # type: ignore[arg-type]
    assert pets.startswith(
        "table public.pets has REPLICA IDENTITY DEFAULT, not FULL, which view "
        "owners, pet_docs needs"
    )
    assert pets.endswith(
        "ALTER TABLE public.pets REPLICA IDENTITY FULL, then readside snapshot "
        "owners; readside snapshot pet_docs"
    )
    assert visits.startswith(
        "partition public.visits_2027 of public.visits has REPLICA IDENTITY NOTHING"
    )
    assert identity.needs_full([object()]) == {}
