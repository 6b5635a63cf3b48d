"""connectors.mongodb.trust against a real TLS listener on loopback (the
stack's kind of certificates, made for the test): a certificate the URI's
CA did not sign is named, anything else is not."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.mongodb.trust import untrusted
from pipeline.stack import tls

pytestmark = pytest.mark.unit


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, tls.Certs]]:
    """A loopback listener that completes TLS handshakes with a server
    certificate of its own CA; its port and certificates."""
    certs = tls.issue(tmp_path / "server-ca")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:  # the client refused the certificate
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], certs
    done.set()
    thread.join(5)
    listener.close()


def test_untrusted_names_a_server_whose_ca_the_uri_does_not_trust(
    server: tuple[int, tls.Certs], tmp_path: Path
) -> None:
    port, _ = server
    other = tls.issue(tmp_path / "other-ca")
    uri = f"mongodb://u:secret@127.0.0.1:{port}/?tls=true&tlsCAFile={other.ca}"
    found = untrusted(uri, 5)
    assert found is not None
    assert found.startswith(f"127.0.0.1:{port}: ")
    assert "issuer" in found  # OpenSSL's "unable to get local issuer certificate"
    assert "secret" not in found


def test_untrusted_none_when_the_uri_trusts_the_servers_ca(
    server: tuple[int, tls.Certs],
) -> None:
    port, certs = server
    uri = f"mongodb://127.0.0.1:{port}/?tls=true&tlsCAFile={certs.ca}"
    assert untrusted(uri, 5) is None


@pytest.mark.parametrize(
    "query",
    [
        "",
        "tls=false",
        "tls=true&tlsInsecure=true",
        "tls=true&tlsAllowInvalidCertificates=true",
    ],
)
def test_untrusted_none_when_tls_off_or_its_check_waived(
    server: tuple[int, tls.Certs], query: str
) -> None:
    port, _ = server
    assert untrusted(f"mongodb://127.0.0.1:{port}/?{query}", 5) is None


def test_untrusted_none_for_a_server_that_is_down(tmp_path: Path) -> None:
    certs = tls.issue(tmp_path / "ca")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    uri = f"mongodb://127.0.0.1:{port}/?tls=true&tlsCAFile={certs.ca}"
    assert untrusted(uri, 2) is None  # refused: down, not untrusted
