"""``api.workers`` (``readside serve --workers``): checked when the config
loads, and a config ``serve`` cannot start with is refused before any server
process is started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from repo_config import DATA, write_config

from pipeline import config
from pipeline.cli import main
from pipeline.errors import ConfigError
from query import server

pytestmark = pytest.mark.unit


def _api(tmp_path: Path, api: dict[str, object]) -> config.Config:
    data = {**DATA, "api": {**(DATA.get("api") or {}), **api}}
    return config.load(write_config(tmp_path, data), env={})


def test_workers_default_to_one_and_are_bounded(tmp_path: Path) -> None:
    assert _api(tmp_path, {}).api.workers == 1
    assert _api(tmp_path, {"workers": 4}).api.workers == 4
    for bad in (0, 65):
        with pytest.raises(ConfigError, match=r"api\.workers"):
            _api(tmp_path, {"workers": bad})


def test_a_bad_key_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    keys = [{"name": "site", "key": "k" * 24, "views": ["nope"]}]
    cfg = _api(tmp_path, {"keys": keys, "workers": 2})
    with pytest.raises(ConfigError, match=r"api\.keys\[site\]: unknown view\(s\) nope"):
        server.serve(cfg)
    no_keys = _api(tmp_path, {"keys": [], "anonymous": False, "workers": 2})
    with pytest.raises(ConfigError, match=r"api\.keys: readside serve needs"):
        server.serve(no_keys, workers=3)


def test_the_cli_refuses_workers_below_one(tmp_path: Path) -> None:
    path = write_config(tmp_path, DATA)
    done = CliRunner().invoke(main, ["--config", str(path), "serve", "--workers", "0"])
    assert done.exit_code == 2
    assert "--workers" in done.output


def test_a_certificate_that_does_not_load_is_refused_before_any_process(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    tls = {"tls_cert": str(cert), "tls_key": str(key), "anonymous": True}
    cfg = _api(tmp_path, {**tls, "workers": 2})
    with pytest.raises(ConfigError, match=r"api\.tls_cert, api\.tls_key: not a"):
        server.serve(cfg)


def test_metrics_directories_of_supervisors_gone_are_swept(tmp_path: Path) -> None:
    """A supervisor killed outright leaves its metrics directory; the next
    one removes it, and never the directory of a supervisor still running."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(done.stdout)  # gone: nothing has its pid now (it just ended)
    left = tmp_path / f"{server.METRICS_DIR}{dead}-abc"
    live = tmp_path / f"{server.METRICS_DIR}{os.getpid()}-def"
    other = tmp_path / "readside-api-metrics-notapid-x"
    for path in (left, live, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"\0" * 16)
    assert server.sweep_metric_dirs(tmp_path) == [left]
    assert not left.exists()
    assert live.exists()
    assert other.exists()
