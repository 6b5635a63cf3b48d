"""A rebuild's waits meet outages as outages: the connector's wait a source
restart (fault seed 53: PostgreSQL restarted mid-wait, the rebuild exited 1),
the drop's wait for the live groups a Kafka outage (fault seed 903: the
admin client's timeout ended the rebuild with a traceback, exit 1)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pipeline.config import parse
from pipeline.errors import TransientError
from pipeline.snapshot import positions
from pipeline.snapshot.positions import Positions

pytestmark = pytest.mark.unit


class Restarting:
    """A connection whose server is shut down after the first statement."""

    def __init__(self) -> None:
        self.calls = 0

    def __enter__(self) -> Restarting:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def execute(self, *_args: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"
            )
        return self

    def fetchone(self) -> tuple[str]:
        return ("0/16B3748",)


CONFIG = {
    "source": {"dsn": "postgresql://x@127.0.0.1:9/x", "tables": ["public.t"]},
    "sinks": {"r": {"type": "redis", "url": "redis://127.0.0.1:9/0"}},
    "views": {"t": {"table": "public.t", "sinks": ["r"]}},
}


def test_wait_connector_source_restart_is_transient(monkeypatch) -> None:
    cfg = parse(CONFIG)
    conn = Restarting()
    monkeypatch.setattr(positions.psycopg, "connect", lambda *_a, **_k: conn)
    with pytest.raises(TransientError, match="administrator command"):
        Positions(cfg, "t", lambda: False).wait_connector(timeout_s=5)
    assert conn.calls == 2


class Unanswered:
    """An admin client whose brokers do not answer: its future times out."""

    def list_consumer_groups(self) -> Any:
        return self

    def result(self, timeout: float) -> Any:
        raise TimeoutError()


def test_live_groups_during_a_kafka_outage_is_transient() -> None:
    pos = Positions(parse(CONFIG), "t", lambda: False)
    pos.__dict__["_admin"] = Unanswered()  # the cached admin client
    with pytest.raises(TransientError, match="consumer groups were not listed"):
        pos.live_groups(serving=True)
