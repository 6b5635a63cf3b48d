"""The search sinks' (Elasticsearch, OpenSearch) TLS settings: ``ca_cert``
and ``verify`` are checked when the config loads (errors name the field),
reach both clients, and a certificate no retry will make trusted is a fatal
error, not a transient one."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import elastic_transport
import opensearchpy
import pytest
from pydantic import ValidationError

from connectors.base import ViewTarget
from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.elasticsearch.store import classify
from connectors.opensearch import OpenSearchSinkConfig
from connectors.opensearch.client import translated
from connectors.opensearch.sink import OpenSearchSink
from pipeline.errors import FatalError, TransientError

pytestmark = pytest.mark.unit

TARGETS = {"v": ViewTarget("v", "v")}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize("cls", [ElasticsearchSinkConfig, OpenSearchSinkConfig])
@pytest.mark.parametrize(
    ("field", "value"), [("ca_cert", "CA"), ("verify", False)], ids=["ca", "verify"]
)
def test_tls_settings_refused_without_an_https_host(
    cls: type[ElasticsearchSinkConfig], field: str, value: object, ca: Path
) -> None:
    kind = cls.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    setting = str(ca) if value == "CA" else value
    with pytest.raises(ValidationError, match=rf"{field}: TLS is off"):
        cls(type=kind, hosts=["http://127.0.0.1:9200"], **{field: setting})


def test_missing_ca_file_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ca_cert"):
        OpenSearchSinkConfig(
            type="opensearch",
            hosts=["https://127.0.0.1:9200"],
            ca_cert=tmp_path / "none.crt",
        )


def test_opensearch_client_gets_ca_and_verification(ca: Path) -> None:
    cfg = OpenSearchSinkConfig(
        type="opensearch",
        hosts=["https://127.0.0.1:19201"],
        username="u",
        password="p",
        ca_cert=ca,
    )
    sink = OpenSearchSink("os", cfg, TARGETS)
    conn = sink._os_client().driver.transport.get_connection()
    assert conn.use_ssl
    assert conn.pool.ca_certs == str(ca)
    assert conn.pool.cert_reqs == "CERT_REQUIRED"


def test_elasticsearch_client_gets_ca(ca: Path) -> None:
    cfg = ElasticsearchSinkConfig(
        type="elasticsearch", hosts=["https://127.0.0.1:19200"], ca_cert=ca
    )
    sink = ElasticsearchSink("es", cfg, TARGETS)
    node = next(iter(sink.client.transport.node_pool.all()))
    assert node.config.ca_certs == str(ca)
    assert node.config.verify_certs is True


@pytest.mark.parametrize("cls", [ElasticsearchSink, OpenSearchSink])
def test_verification_off_is_warned(
    cls: type[ElasticsearchSink], caplog: pytest.LogCaptureFixture
) -> None:
    kind = "opensearch" if cls is OpenSearchSink else "elasticsearch"
    cfg_cls = OpenSearchSinkConfig if cls is OpenSearchSink else ElasticsearchSinkConfig
    cfg = cfg_cls(type=kind, hosts=["https://127.0.0.1:9200"], verify=False)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        cls("s", cfg, TARGETS).client  # noqa: B018 (builds the client)
    assert "verify: false" in caplog.text
    assert "not checked" in caplog.text


def test_untrusted_certificate_is_fatal() -> None:
    cause = ssl.SSLCertVerificationError("certificate verify failed")
    tls = elastic_transport.TlsError(str(cause), errors=(cause,))
    err = classify(tls, "opensearch")
    assert isinstance(err, FatalError)
    assert "not trusted" in str(err)
    assert "ca_cert" in str(err)
    # opensearch-py's SSL error is elastic-transport's TLS error
    os_err = opensearchpy.SSLError("N/A", "certificate verify failed", cause)
    assert isinstance(translated(os_err), elastic_transport.TlsError)
    # a refused connection stays transient
    down = elastic_transport.ConnectionError("refused")
    assert isinstance(classify(down, "opensearch"), TransientError)
