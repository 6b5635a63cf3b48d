"""``readside serve`` over HTTPS: ``api.tls_cert`` and ``api.tls_key``.

With a certificate made for the test by a CA of its own, the API answers
HTTPS to a client that trusts that CA, its reads included; a client that
does not trust it is refused in the handshake, and plain HTTP gets no
answer at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import start_server

from pipeline.stack import tls

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["redis"]}}


def test_serve_answers_https_with_its_certificate_and_not_plain_http(
    make_pipeline: Any, tmp_path: Path
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    certs = tls.issue(tmp_path / "api-tls")
    api = {"anonymous": True, "tls_cert": str(certs.cert), "tls_key": str(certs.key)}
    server = start_server(p, api, ca=certs.ca)
    try:
        assert server.base.startswith("https://")
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
            missing = client.get("/v1/views/items/docs/1")
            assert missing.status_code == 404, missing.text
            assert client.get("/readyz").json()["ready"] is True
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(server.base + "/healthz", timeout=5)  # the system's CAs
        plain = server.base.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(plain + "/healthz", timeout=5)
    finally:
        code = server.stop()
    assert code in (0, -15), server.log_text()  # uvicorn re-raises SIGTERM
    assert "https://127.0.0.1" in server.log_text(), server.log_text()
