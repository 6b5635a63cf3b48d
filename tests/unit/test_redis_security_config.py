"""The Redis sink's authentication and TLS settings: checked when the config
loads (errors name the field), turned into redis-py's options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from repo_config import write_config

from pipeline import config
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def _cache(tmp_path: Path, **settings: Any) -> config.RedisSinkConfig:
    data = {**GOOD, "sinks": {**GOOD["sinks"], "cache": {"type": "redis", **settings}}}
    cache = config.load(write_config(tmp_path, data), env={}).sinks["cache"]
    assert isinstance(cache, config.RedisSinkConfig)
    return cache


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def test_redis_plain_by_default_options_empty(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    assert not cache.secure
    assert cache.client_options() == {}
    assert cache.client_url() == "redis://127.0.0.1:16379/0"


def test_redis_acl_user_and_tls_become_client_options(tmp_path: Path, ca: Path) -> None:
    cache = _cache(
        tmp_path,
        url="redis://127.0.0.1:16380/0",
        username="readside",
        password="s3cret-pw",
        tls=True,
        ca_cert=str(ca),
    )
    assert cache.secure
    assert cache.client_url() == "rediss://127.0.0.1:16380/0"
    assert cache.client_options() == {
        "username": "readside",
        "password": "s3cret-pw",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(ca),
    }
    assert "s3cret-pw" not in repr(cache)


def test_redis_rediss_url_means_tls_verify_false_skips_checks(tmp_path: Path) -> None:
    cache = _cache(tmp_path, url="rediss://127.0.0.1:16380/0", verify=False)
    assert cache.secure
    options = cache.client_options()
    assert options["ssl_cert_reqs"] == "none"
    assert options["ssl_check_hostname"] is False


def test_redis_client_certificate_passed(tmp_path: Path, ca: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    cache = _cache(
        tmp_path, tls=True, ca_cert=str(ca), client_cert=str(cert), client_key=str(key)
    )
    options = cache.client_options()
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == (str(cert), str(key))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ca_cert": "/nonexistent/ca.crt"}, r"sinks\.cache\.redis\.ca_cert: no such"),
        ({"tls": True, "client_key": "/nonexistent/k"}, r"redis\.client_key: no such"),
        ({"ca_cert": "{ca}"}, r"ca_cert: TLS is off"),
        ({"verify": False}, r"verify: TLS is off"),
        ({"url": "rediss://h:1/0", "tls": False}, r"tls: false, but url is rediss"),
        ({"url": "unix:///tmp/r.sock", "tls": True}, r"tls: not over a unix socket"),
        ({"username": "u"}, r"username: an ACL user needs a password"),
        ({"url": "redis://u:p@h:1/0", "password": "q"}, r"password: the url holds"),
        ({"url": "redis://u:p@h:1/0", "username": "v"}, r"username: the url names"),
        ({"url": "http://h:1/0"}, r"url: scheme must be one of redis, rediss, unix"),
        ({"tls": True, "client_cert": "{ca}"}, r"client_cert and client_key: give"),
    ],
)
def test_redis_security_settings_refused_naming_field(
    tmp_path: Path, ca: Path, settings: dict[str, Any], message: str
) -> None:
    settings = {k: str(v).format(ca=ca) for k, v in settings.items()}
    if "tls" in settings:
        settings["tls"] = settings["tls"] == "True"  # type: ignore[assignment] # YAML bool
    if "verify" in settings:
        settings["verify"] = False  # type: ignore[assignment] # YAML bool
    with pytest.raises(ConfigError, match=message) as refused:
        _cache(tmp_path, **settings)
    assert "sinks.cache" in str(refused.value)


def test_redis_refusal_shows_no_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        _cache(tmp_path, url="redis://u:url-pw-41@h:1/0", password="field-pw-42")
    assert "url-pw-41" not in str(refused.value)
    assert "field-pw-42" not in str(refused.value)
