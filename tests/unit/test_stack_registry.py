"""The schema registry service of the local stack, without starting it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.stack import provision
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


def test_registry_keeps_schemas_in_an_h2_file_under_the_data_dir(
    tmp_path: Path,
) -> None:
    url = registry(tmp_path).env()["REGISTRY_DATASOURCE_URL"]
    assert url == f"jdbc:h2:file:{tmp_path / 'data' / 'registry' / 'registry'}"


def test_registry_starts_before_connect_and_probe_fails_when_closed(
    tmp_path: Path,
) -> None:
    names = [cls.name for cls in SERVICE_ORDER]
    assert names.index("registry") < names.index("connect")
    ctx = Context(StackConfig(registry_port=1), tmp_path, provision.locate(tmp_path))
    problem = Registry(ctx).probe()
    assert problem is not None
    assert problem.startswith("readiness probe failed")
