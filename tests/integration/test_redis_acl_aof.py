"""The stack's Redis ACL file keeps every acknowledged write across a restart.

Redis 7.0 replays its append-only file through a client that runs as the
``default`` user, and checks each command queued in a ``MULTI``/``EXEC``
block against that user's permissions when it replays the ``EXEC``. With
``user default off`` alone (no commands), every transaction in the file is
refused at load (``NOPERM``, logged as CRITICAL, the server starts anyway):
the documents the sink wrote and the worker committed are gone, which the
real-stack test ``test_worker_store_outage_commits_nothing_until_store_returns``
caught as a drift after a Redis restart. The stack's ACL file therefore
keeps the ``default`` user off (no one can log in as it) but with every
permission. Here: a private redis-server on the stack's ACL file, written
by the real sink, restarted, read back whole.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import redis
from harness import wait_for

from connectors.base import ViewTarget
from connectors.redis import RedisSinkConfig
from connectors.registry import build_sink
from pipeline.events import Upsert
from pipeline.stack.redis_server import REDIS_CLIENT, redis_acl

pytestmark = pytest.mark.integration

VIEW = "orders"
DOCS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sinks_transactions_survive_a_restart_under_the_stacks_acl_file(
    tmp_path: Path,
) -> None:
    binary = shutil.which("redis-server")
    assert binary, "redis-server not on PATH"
    acl = redis_acl(tmp_path)  # the stack's own file: default off, two users
    user = json.loads((tmp_path / REDIS_CLIENT).read_text())
    port = _free_port()
    cmd = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
        "--save", "", "--appendonly", "yes", "--aclfile", str(acl),
    ]  # fmt: skip
    cfg = RedisSinkConfig(
        type="redis",
        url=f"redis://127.0.0.1:{port}/0",
        username=user["username"],
        password=user["password"],
    )

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

        def up() -> bool:
            try:
                with cfg.connect() as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, f"redis-server on port {port}")
        return proc

    proc = start()
    try:
        with pytest.raises(redis.AuthenticationError):  # still no anonymous client
            redis.Redis(port=port).ping()
        target = {VIEW: ViewTarget(VIEW, "aof")}
        sink = build_sink("cache", cfg, target)
        sink.open()
        ids = [str(i) for i in range(DOCS)]
        sink.write([Upsert(VIEW, i, 1, {"id": i}) for i in ids])
        sink.write([Upsert(VIEW, i, 2, {"id": i, "v": 2}) for i in ids[::2]])
        written = sink.fetch(VIEW, ids)
        sink.close()
        assert len(written) == DOCS
        proc.terminate()  # a clean shutdown: the AOF is fsynced
        assert proc.wait(30) == 0
        proc = start()
        sink = build_sink("cache", cfg, target)
        sink.open()
        reloaded = sink.fetch(VIEW, ids)
        sink.close()
        assert reloaded == written
    finally:
        proc.terminate()
        proc.wait(30)
