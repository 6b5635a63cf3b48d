"""Planted secrets, and the check that no output shows one (shared by the
tests that look for secrets: ``test_secrets_hidden``, ``test_attacks``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: the stack's PostgreSQL trusts local connections: a password in a DSN is
#: accepted and ignored, so it can be planted anywhere a DSN goes
PASSWORD = "planted-pw-5521"


def with_password(dsn: str, password: str = PASSWORD) -> str:
    """``dsn`` with ``password`` in it."""
    return make_conninfo(**{**conninfo_to_dict(dsn), "password": password})


def assert_hidden(shown: Mapping[str, str], secrets: Iterable[str]) -> None:
    """No output of ``shown`` (where -> text) holds any of ``secrets``."""
    assert shown, "no output to look at"
    assert all(shown.values()), "an output to look at is empty"
    for secret in secrets:
        leaked = [where for where, text in shown.items() if secret in text]
        assert not leaked, f"{secret} shown by {leaked}"
