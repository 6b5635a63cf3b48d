"""The optional OpenSearch service of the local stack, without starting it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import opensearch, provision, runner
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def node(tmp_path: Path) -> opensearch.OpenSearch:
    cfg = StackConfig(cache_dir=str(tmp_path / "cache"))
    ctx = Context(cfg, tmp_path / "data", provision.locate(tmp_path / "cache"))
    return opensearch.OpenSearch(ctx)


def test_node_runs_opensearchs_bootstrap_from_the_cached_home(tmp_path: Path) -> None:
    svc = node(tmp_path)
    cmd = svc.command()
    home = opensearch.home(tmp_path / "cache")
    assert cmd[-3:] == [
        "-cp",
        f"{home / 'lib'}/*",
        "org.opensearch.bootstrap.OpenSearch",
    ]
    assert f"-Dopensearch.path.home={home}" in cmd
    assert "-Xmx512m" in cmd
    assert svc.ports == [19201, 19301]


def test_node_config_is_single_node_on_loopback(tmp_path: Path) -> None:
    svc = node(tmp_path)
    svc.prepare()
    conf = (tmp_path / "data" / "opensearch" / "config" / "opensearch.yml").read_text()
    assert "network.host: 127.0.0.1\nhttp.port: 19201\n" in conf
    assert "transport.port: 19301\ndiscovery.type: single-node\n" in conf
    assert f"path.data: {tmp_path / 'data' / 'opensearch' / 'data'}" in conf


def test_probe_names_a_closed_port(tmp_path: Path) -> None:
    ctx = Context(StackConfig(opensearch_port=1), tmp_path, provision.locate(tmp_path))
    problem = opensearch.OpenSearch(ctx).probe()
    assert problem is not None
    assert problem.startswith("http probe failed")


def test_opensearch_is_optional(tmp_path: Path) -> None:
    ctx = Context(StackConfig(), tmp_path, provision.locate(tmp_path))
    assert "opensearch" not in [s.name for s in runner.services(ctx)]
    assert "opensearch" in [s.name for s in runner.services(ctx, optional=True)]
    with pytest.raises(FatalError, match="unknown optional service"):
        runner.up(StackConfig(data_dir=str(tmp_path)), with_=("solr",))


def test_cli_offers_each_optional_service() -> None:
    result = CliRunner().invoke(main, ["stack", "up", "--help"])
    assert result.exit_code == 0
    assert "--with [opensearch]" in result.output
    assert set(runner.OPTIONAL) == {"opensearch"}
