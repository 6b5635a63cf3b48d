"""Runs one measurement in its own Python process (its own peak RSS, its own
interpreter state) and takes the JSON line it prints last."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(module: str, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """``python -m module '<spec json>'``; an ``error`` entry when it fails."""
    cmd = [sys.executable, "-m", module, json.dumps(spec)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "error": f"did not finish within {timeout_s:.0f}s: "
            f"{_text(exc.stderr).strip()[-2000:]}"
        }
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _text(out: str | bytes | None) -> str:
    """What a timed-out child printed (``TimeoutExpired`` may hold bytes)."""
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""
