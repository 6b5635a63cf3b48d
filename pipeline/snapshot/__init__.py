"""Snapshot loads: bulk (re)loads of a view, resumable, beside streaming."""

from __future__ import annotations

from pipeline.snapshot.load import Loader, Options
from pipeline.snapshot.state import SnapshotLog, SnapshotState

__all__ = ["Loader", "Options", "SnapshotLog", "SnapshotState"]
