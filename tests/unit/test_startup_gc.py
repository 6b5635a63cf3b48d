"""The collector settings of a worker or snapshot process (startup.tune_gc)."""

from __future__ import annotations

import gc

import pytest

from pipeline import startup

pytestmark = pytest.mark.unit


def test_tune_gc_collects_the_young_generation_rarely_and_freezes_startup() -> None:
    saved = gc.get_threshold()
    try:
        startup.tune_gc()
        assert gc.get_threshold() == (startup.GC_YOUNG_THRESHOLD, *saved[1:])
        assert gc.get_freeze_count() > 0  # what start-up built is not scanned
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
