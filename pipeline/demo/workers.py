"""The demo's worker processes: ``readside worker`` subprocesses with logs.

Workers left running by ``demo --keep-running`` are recorded in a state file so
that the next demo stops them before it resets the pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from pipeline.errors import FatalError

logger = logging.getLogger(__name__)

STATE_DIR = Path(".readside/demo")
Procs = list[subprocess.Popen[bytes]]


def _state_file() -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return STATE_DIR / "workers.json"


def stop_kept(out: Console) -> None:
    """Stop workers a previous ``--keep-running`` demo left behind."""
    path = _state_file()
    if not path.exists():
        return
    for pid in json.loads(path.read_text()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pipeline.cli" in cmdline:
            os.kill(pid, signal.SIGTERM)
            out.print(f"stopped worker {pid} of an earlier demo")
            _wait_gone(pid, 40.0)
    path.unlink()


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)


def start(config_path: str | None, count: int) -> list[subprocess.Popen[bytes]]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pipeline.cli"]
    if config_path:
        cmd += ["--config", config_path]
    cmd += ["worker", "--metrics-port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    for n in range(1, count + 1):
        with (STATE_DIR / f"worker-{n}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            )
    return procs


def check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for n, proc in enumerate(procs, 1):
        if proc.poll() is not None:
            tail = (STATE_DIR / f"worker-{n}.log").read_text(errors="replace")
            raise FatalError(
                f"worker {proc.pid} exited with {proc.returncode}:\n"
                + "\n".join(tail.splitlines()[-15:])
            )


def stop(out: Console, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    """SIGTERM every worker, wait for them to drain; True if all exited 0."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    ok = True
    for proc in procs:
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        ok = ok and code == 0
        out.print(f"worker {proc.pid} exited with {code}")
    return ok


def keep(procs: Procs) -> None:
    """Record workers left running, for the next demo to stop."""
    _state_file().write_text(json.dumps([p.pid for p in procs]))
