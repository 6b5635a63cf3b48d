"""``readside connector apply`` on a connector whose task failed: the task is
restarted on the new config (connectors.debezium), and a task that cannot
resume because its WAL position is gone says so and the way out."""

from __future__ import annotations

from typing import Any

import pytest

from connectors import debezium
from pipeline.errors import TransientError

pytestmark = pytest.mark.unit

PATH = "/connectors/shop-postgres"


class Connect:
    """Connect's REST API as the restart sees it: the task states it shows,
    one per status read, the last one held."""

    def __init__(self, states: list[str], refuse_first: bool = False) -> None:
        self.states = states
        self.refuse_first = refuse_first
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            if self.refuse_first:
                self.refuse_first = False
                raise TransientError("409 rebalance in progress")
            return None
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"tasks": [{"id": 0, "state": state}]}

    def restarts(self) -> int:
        return sum(1 for method, _ in self.calls if method == "POST")


def test_a_failed_task_is_restarted_until_connect_shows_it_restarted() -> None:
    connect = Connect(["FAILED", "RESTARTING"], refuse_first=True)
    debezium._restart_failed(connect, PATH, within_s=5, every_s=0)  # type: ignore[arg-type]
    assert connect.restarts() == 2  # refused while rebalancing, then asked again
    assert connect.calls[0] == (
        "POST",
        f"{PATH}/restart?includeTasks=true&onlyFailed=true",
    )


def test_a_task_that_fails_again_is_left_to_wait_running() -> None:
    connect = Connect(["FAILED"])
    debezium._restart_failed(connect, PATH, within_s=0.05, every_s=0.01)  # type: ignore[arg-type]
    assert 1 <= connect.restarts() <= 10


def test_a_lost_position_names_the_way_out() -> None:
    said = debezium.position_gone(0)
    assert said.startswith(
        "connector task 0 cannot resume: the position in the WAL it keeps is "
        "gone from its replication slot"
    )
    assert "set source.snapshot_mode: when_needed and run readside connector" in said
    assert "readside snapshot VIEW --from-source" in said
