"""readside against a MongoDB server that speaks TLS.

The stack's FerretDB answers TLS on ``stack.ferretdb_tls_port`` with the
stack's certificate, beside its plain port
(``pipeline.stack.ferretdb.ferretdb_tls_client``: the backend's MongoDB
role, ``tls=true`` and the stack's CA). Here: a worker whose MongoDB sink's
URI is the TLS one converges to the source through that port; a client that
does not trust the stack's CA is refused (the certificate fails its check),
and the sink and the worker stop at start with a clear error, having
written nothing; the plain port keeps serving everything else.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pymongo
import pymongo.errors
import pytest
from harness import Pipeline, wait_for

from connectors.mongodb import MongoSinkConfig
from connectors.mongodb.sink import MongoSink
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import tls
from pipeline.stack.ferretdb import ferretdb_client, ferretdb_tls_client

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["mongodb"]}}
Doc = dict[str, Any]


def over_tls(p: Pipeline, stack: StackConfig, **query: str) -> str:
    """Point ``p``'s MongoDB sink at FerretDB's TLS port (with ``query``
    over the URI's options); the URI it uses."""
    uri = ferretdb_tls_client(Path(stack.data_dir), stack.ferretdb_tls_port)
    if query:
        parts = urllib.parse.urlsplit(uri)
        options = dict(urllib.parse.parse_qsl(parts.query))
        options.update(query)
        uri = urllib.parse.urlunsplit(
            parts._replace(query=urllib.parse.urlencode(options))
        )
    p.rewrite(lambda d: d["sinks"]["mongodb"].update(uri=uri))
    return uri


def _plain(stack: StackConfig) -> pymongo.MongoClient[Doc]:
    uri = ferretdb_client(Path(stack.data_dir), stack.ferretdb_port)
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)


def _connected_to(port: int, pid: int) -> bool:
    """Whether process ``pid`` holds a TCP connection to ``port`` (``ss``)."""
    found = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"pid={pid}," in found.stdout


def test_worker_writes_over_tls_and_converges(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    uri = over_tls(p, stack)
    sink_cfg = p.config.sinks["mongodb"]
    assert isinstance(sink_cfg, MongoSinkConfig)
    assert urllib.parse.urlsplit(uri).port == stack.ferretdb_tls_port
    p.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 25) g")
    p.apply_connector()
    worker = p.start_worker()
    p.sql("UPDATE items SET name = name || '!' WHERE id % 5 = 0")
    p.sql("DELETE FROM items WHERE id = 4")
    p.wait_drained()
    p.assert_converged()  # verify reads the sink over TLS too
    # the worker's connections are on the TLS port
    assert wait_for(
        lambda: _connected_to(stack.ferretdb_tls_port, worker.pid),
        30,
        "the worker's connection to FerretDB's TLS port",
    )
    assert not _connected_to(stack.ferretdb_port, worker.pid)
    # the documents, read back on the plain port, are the worker's
    with _plain(stack) as client:
        coll = client[sink_cfg.database]["items"]
        live = coll.count_documents({"_deleted": {"$ne": True}})
        assert live == 24
        five = coll.find_one({"_id": "5"})
        assert five is not None
        assert five["name"] == "item 5!"
    # the TLS port speaks nothing but TLS
    bare = ferretdb_client(Path(stack.data_dir), stack.ferretdb_tls_port)
    with (
        pymongo.MongoClient(bare, serverSelectionTimeoutMS=2000) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError),
    ):
        client.admin.command("ping")
    assert worker.terminate() == 0


def test_untrusted_ca_is_refused_and_the_worker_writes_nothing(
    make_pipeline: Any, stack: StackConfig, tmp_path: Path
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    good = p.config.sinks["mongodb"]
    assert isinstance(good, MongoSinkConfig)
    p.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
    p.apply_connector()
    other = tls.issue(tmp_path / "other-ca")  # a CA that did not sign the server's
    uri = over_tls(p, stack, tlsCAFile=str(other.ca))
    password = urllib.parse.urlsplit(uri).password
    assert password

    # a bare client: the handshake fails on the server's certificate
    with (
        pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError) as raw,
    ):
        client.admin.command("ping")
    assert "certificate verify failed" in str(raw.value), raw.value

    p.rewrite(lambda d: d["sinks"]["mongodb"].update(timeout_s=5))
    try:
        cfg = p.config.sinks["mongodb"]
        assert isinstance(cfg, MongoSinkConfig)
        sink = MongoSink("mongodb", cfg, {})
        with pytest.raises(FatalError, match="certificate is not trusted") as refused:
            sink.open()
        sink.close()
        assert password not in str(refused.value)

        worker = p.start_worker()
        text = worker.refused(
            90,
            "the worker that does not trust FerretDB's certificate to exit",
            password,
        )
        assert "certificate is not trusted" in text, worker.tail()
        with _plain(stack) as client:  # nothing written
            assert good.database not in client.list_database_names()
    finally:  # the teardown drops the test's database through the sink's URI
        p.rewrite(
            lambda d: d["sinks"]["mongodb"].update(
                uri=good.uri.get_secret_value(), timeout_s=good.timeout_s
            )
        )


def test_plain_port_still_serves_beside_tls(stack: StackConfig) -> None:
    data = Path(stack.data_dir)
    with _plain(stack) as client:
        assert client.admin.command("ping")["ok"] == 1
    secure = ferretdb_tls_client(data, stack.ferretdb_tls_port)
    with pymongo.MongoClient(secure, serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1
    # a plain client's options do not make the plain port speak TLS
    with (
        pymongo.MongoClient(
            ferretdb_client(data, stack.ferretdb_port) + "&tls=true",
            tlsCAFile=str(data / tls.TLS_DIR / "ca.crt"),
            serverSelectionTimeoutMS=2000,
        ) as client,
        pytest.raises(pymongo.errors.ServerSelectionTimeoutError),
    ):
        client.admin.command("ping")
