"""Secrets to look for, and the check that no output shows one (shared by the
tests that look for secrets: ``test_secrets_hidden``, ``test_attacks``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from psycopg.conninfo import conninfo_to_dict


def password_of(dsn: str) -> str:
    """The password ``dsn`` holds: the stack's PostgreSQL checks it, so a
    test's DSNs hold the superuser's real one, the secret to look for."""
    password = conninfo_to_dict(dsn).get("password")
    assert password, "the DSN holds no password: nothing to look for"
    return str(password)


def assert_hidden(shown: Mapping[str, str], secrets: Iterable[str]) -> None:
    """No output of ``shown`` (where -> text) holds any of ``secrets``."""
    assert shown, "no output to look at"
    assert all(shown.values()), "an output to look at is empty"
    for secret in secrets:
        leaked = [where for where, text in shown.items() if secret in text]
        assert not leaked, f"{secret} shown by {leaked}"
