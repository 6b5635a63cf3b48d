"""Stopping a service waits for its whole process group, not only its leader.

A service runs as ``runuser -- server``: on SIGTERM the leader (runuser)
exits at once while the server is still closing and holding its ports, so a
start right after found them taken (Elasticsearch's 19300 in the fault
suite). Here a real process group whose leader exits on SIGTERM and whose
child takes 1.5 s to close.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.stack import runner

pytestmark = pytest.mark.unit

#: the server: on SIGTERM it takes 1.5 s to close; it writes the file named
#: by its argument once that handler is installed
CHILD = (
    "import signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.5), exit(0))); "
    "open(sys.argv[1], 'w').write('ready'); "
    "time.sleep(60)"
)


def test_stop_waits_for_every_process_of_the_group(tmp_path: Path) -> None:
    cfg = StackConfig(data_dir=str(tmp_path))
    ctx = runner.Context(cfg=cfg, data=tmp_path, installed=None)  # type: ignore[arg-type]
    (tmp_path / "run").mkdir()
    leader = subprocess.Popen(
        [
            "sh",
            "-c",
            f'{sys.executable} -c "{CHILD}" {tmp_path}/ready & '
            f"echo $! > {tmp_path}/child; wait",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    while not (tmp_path / "ready").exists():  # the child's handler is installed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (tmp_path / "run" / "svc.pid").write_text(str(leader.pid))
    started = time.monotonic()
    runner._stop(ctx, "svc", leader.pid, timeout=20)
    assert not runner._group_alive(leader.pid)
    assert not Path(f"/proc/{child}").exists() or _zombie(child)
    assert time.monotonic() - started >= 1.0  # it waited for the child
    leader.wait(5)


def _zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_down_stops_each_service_after_those_that_need_or_use_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Connect (it needs Kafka, uses PostgreSQL and the registry) stops
    before them, the registry before Keycloak; the rest stop at once, not
    one after another."""

    class Fake:
        def __init__(self, name: str, needs: tuple = (), uses: tuple = ()) -> None:
            self.name, self.needs, self.uses = name, needs, uses

    order = [
        Fake("postgres"),
        Fake("redis"),
        Fake("kafka"),
        Fake("keycloak"),
        Fake("registry", needs=("keycloak",)),
        Fake("connect", needs=("kafka",), uses=("postgres", "registry")),
    ]
    spans: dict[str, tuple[float, float]] = {}

    def stop(_ctx: object, name: str, _pid: int) -> None:
        began = time.monotonic()
        time.sleep(0.3)
        spans[name] = (began, time.monotonic())

    monkeypatch.setattr(runner, "context", lambda cfg, install: None)
    monkeypatch.setattr(runner, "services", lambda ctx, optional: order)
    monkeypatch.setattr(
        runner, "_read_pid", lambda ctx, name: None if name == "redis" else 1
    )
    monkeypatch.setattr(runner, "_pidfile", lambda ctx, name: tmp_path / name)
    monkeypatch.setattr(runner, "_stop", stop)
    stopped = runner.down(StackConfig(data_dir=str(tmp_path)), progress=lambda _: None)
    assert stopped == ["connect", "registry", "keycloak", "kafka", "postgres"]
    for first, then in [
        ("connect", "kafka"),
        ("connect", "postgres"),
        ("connect", "registry"),
        ("registry", "keycloak"),
    ]:
        assert spans[first][1] <= spans[then][0], (first, then)
    # those that wait for nobody but Connect stop together
    (k0, k1), (p0, p1), (r0, r1) = spans["kafka"], spans["postgres"], spans["registry"]
    assert max(k0, p0, r0) < min(k1, p1, r1), spans
