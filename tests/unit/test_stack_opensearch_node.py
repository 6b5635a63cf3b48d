"""The optional OpenSearch service of the local stack, without starting it."""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import opensearch, provision, runner, tls
from pipeline.stack import opensearch_security as security
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def node(tmp_path: Path, secure: bool = True) -> opensearch.OpenSearch:
    cfg = StackConfig(cache_dir=str(tmp_path / "cache"))
    ctx = Context(cfg, tmp_path / "data", provision.locate(tmp_path / "cache"))
    svc = opensearch.OpenSearch(ctx)
    # the security plugin's files come from the provisioned plugin (and its
    # password hash from the plugin's tool): the stack's integration tests
    svc.secure = secure
    return svc


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
    svc = node(tmp_path, secure=False)
    svc.prepare()
    conf = (tmp_path / "data" / "opensearch" / "config" / "opensearch.yml").read_text()
    assert "network.host: 127.0.0.1\nhttp.port: 19201\n" in conf
    assert "transport.port: 19301\ndiscovery.type: single-node\n" in conf
    assert f"path.data: {tmp_path / 'data' / 'opensearch' / 'data'}" in conf


def test_security_settings_https_transport_tls_and_admin_dn() -> None:
    conf = security.settings(19201)
    assert "plugins.security.ssl.http.enabled: true\n" in conf
    assert "plugins.security.ssl.http.pemtrustedcas_filepath: ca.crt\n" in conf
    assert "plugins.security.ssl.transport.pemcert_filepath: node.crt\n" in conf
    assert f'plugins.security.nodes_dn: ["{security.NODE_DN}"]' in conf
    assert f'plugins.security.authcz.admin_dn: ["{security.ADMIN_DN}"]' in conf
    assert security.NODE_DN != security.ADMIN_DN
    assert "allow_default_init_securityindex: true" in conf
    assert "demo" not in conf


def test_data_of_another_version_is_cleared(tmp_path: Path) -> None:
    svc = node(tmp_path, secure=False)
    data = tmp_path / "data" / "opensearch" / "data"
    (data / "nodes").mkdir(parents=True)  # an older node's, without a marker
    svc.prepare()
    assert not (data / "nodes").exists()
    (data / "nodes").mkdir()  # this version's: kept
    svc.prepare()
    assert (data / "nodes").exists()


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


def _probe_node(tmp_path: Path, server: http.server.HTTPServer) -> str | None:
    """The stack's OpenSearch probe (its data in ``tmp_path``) against a
    stand-in node ``server``, served on a thread for the probe's time."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = StackConfig(opensearch_port=server.server_address[1])
        return opensearch.OpenSearch(
            Context(cfg, tmp_path, provision.locate(tmp_path))
        ).probe()
    finally:
        server.shutdown()
        server.server_close()


def test_probe_names_a_node_without_https(tmp_path: Path) -> None:
    """A node started before its security plugin answers plain HTTP: the
    probe says so, and what to do."""
    tls.stack_certs(tmp_path)  # the CA the probe trusts
    security.user(tmp_path / "opensearch")
    server = http.server.HTTPServer(
        ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler
    )
    problem = _probe_node(tmp_path, server)
    assert problem is not None
    assert problem.startswith("https probe failed (")
    assert problem.endswith("restart opensearch")


@pytest.mark.parametrize(("status", "healthy"), [(401, True), (200, False)])
def test_probe_without_credentials_asks_only_for_a_secured_answer(
    tmp_path: Path, status: int, healthy: bool
) -> None:
    """From a directory without the stack's credentials (``stack status``
    elsewhere), a node that answers HTTPS with 401 is healthy; one that
    answers without asking for credentials is not."""
    certs = tls.stack_certs(tmp_path / "certs")  # not where the probe looks

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    problem = _probe_node(tmp_path, server)
    if healthy:
        assert problem is None
    else:
        assert problem == "answers HTTPS without credentials: security is off"
