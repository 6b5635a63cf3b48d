"""The Redis probe of ``stack status`` and ``stack up`` asks once.

redis-py retries a timed-out command three times with backoff: a port held
by something that takes connections and never answers (another program on
the stack's Redis port) kept ``stack status`` waiting 26 s on this probe.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.stack.provision import Installed
from pipeline.stack.redis_server import Redis
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def test_probe_of_a_port_that_never_answers_connects_once(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # held open, never answered

    threading.Thread(target=take, daemon=True).start()
    nowhere = tmp_path / "none"
    svc = Redis(
        Context(
            cfg=StackConfig(redis_port=listener.getsockname()[1]),
            data=tmp_path,
            installed=Installed(*[nowhere] * 7),
        )
    )
    try:
        problem = svc.probe()
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert problem == "ping failed: TimeoutError"
    assert len(accepted) == 1
