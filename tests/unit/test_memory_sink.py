"""The conformance suite and the failure knobs of the in-memory sink."""

from __future__ import annotations

import pytest

from connectors import conformance
from connectors.base import Sink, Stored
from connectors.memory import MemorySink
from pipeline.errors import TransientError
from pipeline.events import Delete, DocumentOp, Upsert

pytestmark = pytest.mark.unit

VIEW = "orders"


@pytest.mark.parametrize("case", list(conformance.CASES))
def test_memory_sink_conformance_case_passes(case: str) -> None:
    conformance.CASES[case](MemorySink(), VIEW)


def test_memory_sink_run_all_passes_every_case() -> None:
    made: list[MemorySink] = []

    def new_sink() -> tuple[Sink, str]:
        made.append(MemorySink())
        return made[-1], VIEW

    conformance.run_all(new_sink)
    assert len(made) == len(conformance.CASES)


def test_conformance_broken_sink_fails_with_clear_message() -> None:
    class ForgetfulSink(MemorySink):
        """Ignores the version guard: a late older write wins."""

        def write(self, ops):  # type: ignore[no-untyped-def]
            for op in ops:
                self.data.pop((op.view, op.doc_id), None)
            return super().write(ops)

    with pytest.raises(AssertionError, match=r"sink forgetful: .*expected"):
        conformance.stale_write_ignored(ForgetfulSink("forgetful"), VIEW)


def _ops(n: int) -> list[DocumentOp]:
    return [Upsert(VIEW, str(i), 10, {"i": i}) for i in range(n)]


def test_memory_sink_fail_prob_raises_transient_and_applies_nothing() -> None:
    sink = MemorySink(fail_prob=1.0, seed=1)
    with pytest.raises(TransientError):
        sink.write(_ops(4))
    assert sink.data == {}


def test_memory_sink_down_raises_transient_until_up() -> None:
    sink = MemorySink()
    sink.down = True
    with pytest.raises(TransientError):
        sink.write(_ops(2))
    sink.down = False
    assert sink.write(_ops(2)).applied == 2


def test_memory_sink_partial_failure_then_replay_converges() -> None:
    sink = MemorySink(partial_fail_prob=1.0, seed=1)
    ops = _ops(6)
    with pytest.raises(TransientError):
        sink.write(ops)
    assert len(sink.ids(VIEW)) == 3
    sink.partial_fail_prob = 0.0
    result = sink.write(ops)
    assert (result.applied, result.stale) == (3, 3)
    assert sink.ids(VIEW) == {str(i) for i in range(6)}


def test_memory_sink_reject_ids_reports_reason_and_stores_nothing() -> None:
    sink = MemorySink(reject_ids=["1"])
    result = sink.write([*_ops(2), Delete(VIEW, "x", 3)])
    assert result.applied == 2
    assert [(op.doc_id, bool(reason)) for op, reason in result.rejected] == [
        ("1", True)
    ]
    assert sink.fetch(VIEW, ["0", "1", "x"]) == {
        "0": Stored(10, {"i": 0}),
        "x": Stored(3, None),
    }


def test_memory_sink_fail_prob_seeded_is_repeatable() -> None:
    def outcomes(seed: int) -> list[bool]:
        sink = MemorySink(fail_prob=0.5, seed=seed)
        seen = []
        for _ in range(20):
            try:
                sink.write(_ops(1))
                seen.append(True)
            except TransientError:
                seen.append(False)
        return seen

    first = outcomes(7)
    assert first == outcomes(7)
    assert True in first
    assert False in first
