"""``api.tls_cert`` and ``api.tls_key``: HTTPS for ``readside serve``,
checked when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_config import DATA, write_config

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.stack import tls

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _api(tmp_path: Path, api: dict[str, object]) -> config.Config:
    data = {**DATA, "api": {**(DATA.get("api") or {}), **api}}
    return config.load(write_config(tmp_path, data), env={})


def test_api_tls_settings_load_and_are_checked(tmp_path: Path) -> None:
    certs = tls.issue(tmp_path / "api")
    cfg = _api(tmp_path, {"tls_cert": str(certs.cert), "tls_key": str(certs.key)})
    assert cfg.api.tls
    assert not _api(tmp_path, {}).api.tls
    with pytest.raises(ConfigError, match=r"api: tls_cert and tls_key: give both"):
        _api(tmp_path, {"tls_cert": str(certs.cert)})
    with pytest.raises(ConfigError, match=r"api\.tls_key: no such file"):
        _api(tmp_path, {"tls_cert": str(certs.cert), "tls_key": "/nonexistent"})
