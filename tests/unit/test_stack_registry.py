"""The schema registry service of the local stack, without starting it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import keycloak, provision
from pipeline.stack.jvm import SERVICE_ORDER, Registry
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def registry(tmp_path: Path) -> Registry:
    cache = tmp_path / "cache"
    ctx = Context(StackConfig(), tmp_path / "data", provision.locate(cache))
    return Registry(ctx)


def test_registry_runs_apicurio_runner_jar_on_its_port_on_loopback(
    tmp_path: Path,
) -> None:
    cmd = registry(tmp_path).command()
    assert cmd[-2:] == [
        "-jar",
        str(
            tmp_path
            / "cache"
            / f"apicurio-registry-{provision.APICURIO_VERSION}"
            / f"apicurio-registry-app-{provision.APICURIO_VERSION}-runner.jar"
        ),
    ]
    assert "-Dquarkus.http.port=18081" in cmd
    assert "-Dquarkus.http.host=127.0.0.1" in cmd


def test_registry_keeps_schemas_in_an_h2_file_written_at_each_commit(
    tmp_path: Path,
) -> None:
    url = registry(tmp_path).env()["REGISTRY_DATASOURCE_URL"]
    db = tmp_path / "data" / "registry" / "registry"
    # WRITE_DELAY=0: a schema is in the file before its id is answered
    assert url == f"jdbc:h2:file:{db};WRITE_DELAY=0"


def test_registry_starts_before_connect_and_probe_fails_when_closed(
    tmp_path: Path,
) -> None:
    names = [cls.name for cls in SERVICE_ORDER]
    assert names.index("registry") < names.index("connect")
    ctx = Context(StackConfig(registry_port=1), tmp_path, provision.locate(tmp_path))
    problem = Registry(ctx).probe()
    assert problem is not None
    assert problem.startswith("API probe failed")


def test_registry_asks_keycloak_and_starts_after_it(tmp_path: Path) -> None:
    """Every request logs in (basic credentials traded for a token at the
    stack's Keycloak), roles from the token; Keycloak comes first in the
    order and the registry waits for it."""
    env = registry(tmp_path).env()
    assert env["AUTH_ENABLED"] == "true"
    assert env["KEYCLOAK_URL"] == "http://127.0.0.1:18180"
    assert env["KEYCLOAK_REALM"] == keycloak.REALM
    assert env["CLIENT_CREDENTIALS_BASIC_AUTH_ENABLED"] == "true"
    assert env["ROLE_BASED_AUTHZ_ENABLED"] == "true"
    assert Registry.needs == ("keycloak",)
    names = [cls.name for cls in SERVICE_ORDER]
    for cls in SERVICE_ORDER:  # what a service needs comes before it
        for need in cls.needs:
            assert names.index(need) < names.index(cls.name), cls.name


def test_keycloak_runs_optimized_on_loopback_with_its_db_in_the_data_dir(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    ctx = Context(
        StackConfig(cache_dir=str(cache)), tmp_path / "data", provision.locate(cache)
    )
    cmd = keycloak.Keycloak(ctx).command()
    kc = cmd.index(str(keycloak.home(cache) / "bin" / "kc.sh"))
    assert cmd[kc + 1 : kc + 3] == ["start", "--optimized"]
    assert "--http-host=127.0.0.1" in cmd
    assert "--http-port=18180" in cmd
    assert "--http-management-port=18181" in cmd
    db = tmp_path / "data" / "keycloak" / "db" / "keycloak"
    assert f"--db-url=jdbc:h2:file:{db};NON_KEYWORDS=VALUE" in cmd
    assert "--cache=local" in cmd  # one node: no cluster to join at start
    assert keycloak.Keycloak(ctx).ports == [18180, 18181]
    # the transaction manager's store where the service user may write
    store = tmp_path / "data" / "keycloak" / "db" / "ObjectStore"
    want = f"-Dquarkus.transaction-manager.object-store.directory={store}"
    assert keycloak.Keycloak(ctx).env()["JAVA_OPTS_APPEND"] == want


def test_java21_home_takes_the_newest_jdk_of_21_or_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, version in (
        ("jdk17", "17.0.15"),
        ("jdk25", "25.0.3"),
        ("jdk21", "21.0.1"),
    ):
        home = tmp_path / name
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "java").touch()
        (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    monkeypatch.setattr(keycloak, "JVM_ROOT", tmp_path)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk17"))
    assert keycloak.java21_home() == tmp_path / "jdk25"
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk21"))
    assert keycloak.java21_home() == tmp_path / "jdk21"
    monkeypatch.setattr(keycloak, "JVM_ROOT", tmp_path / "none")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk17"))
    with pytest.raises(FatalError, match="needs Java 21 or newer"):
        keycloak.java21_home()
