"""The opensearch sink kind, without a server: its settings, what builds it,
and how its client speaks for elasticsearch-py's."""

from __future__ import annotations

from pathlib import Path

import elastic_transport
import elasticsearch
import opensearchpy
import pytest

from connectors.base import ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.opensearch import OpenSearchSinkConfig
from connectors.opensearch.client import _params, translated
from connectors.opensearch.sink import OpenSearchSink, flat_objects
from connectors.registry import build_sink
from pipeline.errors import FatalError, TransientError
from pipeline.sinktypes import kind

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_opensearch_kind_builds_the_shared_sink_on_the_stacks_node() -> None:
    cfg = kind("opensearch").config.model_validate({"type": "opensearch"})
    assert isinstance(cfg, OpenSearchSinkConfig)
    assert cfg.hosts == ["https://127.0.0.1:19201"]
    sink = build_sink("os", cfg, {"v": ViewTarget("v", "orders")})
    assert isinstance(sink, OpenSearchSink)
    assert isinstance(sink, ElasticsearchSink)
    assert sink.store == "opensearch"
    assert sink.alias("v") == "readside-orders"


def test_index_names_are_checked_as_for_elasticsearch() -> None:
    cfg = OpenSearchSinkConfig(type="opensearch")
    assert cfg.target_problem("Orders") is not None
    assert cfg.target_problem("orders") is None


def test_flattened_objects_are_opensearchs_flat_object() -> None:
    derived = {
        "properties": {
            "tags": {"type": "flattened", "ignore_above": 8191},
            "shop": {"type": "object", "properties": {"h": {"type": "flattened"}}},
            "n": {"type": "double"},
        }
    }
    # flat_object takes no parameter
    assert flat_objects(derived) == {
        "properties": {
            "tags": {"type": "flat_object"},
            "shop": {"type": "object", "properties": {"h": {"type": "flat_object"}}},
            "n": {"type": "double"},
        }
    }


def test_params_are_written_as_opensearch_reads_them() -> None:
    assert _params(
        {"refresh": True, "filter_path": ["a", "b"], "timeout": "5ms", "x": None}
    ) == {"refresh": "true", "filter_path": "a,b", "timeout": "5ms"}


def test_errors_become_elasticsearch_pys_and_classify_alike() -> None:
    missing = translated(opensearchpy.NotFoundError(404, "index_not_found", {}))
    assert isinstance(missing, elasticsearch.NotFoundError)
    refused = translated(opensearchpy.RequestError(400, "bad", {"error": "x"}))
    assert isinstance(refused, elasticsearch.BadRequestError)
    busy = translated(opensearchpy.TransportError(429, "too many", {}))
    assert isinstance(busy, elasticsearch.ApiError)
    down = translated(opensearchpy.ConnectionError("N/A", "refused", OSError()))
    assert isinstance(down, elastic_transport.ConnectionError)
    sink = build_sink("os", OpenSearchSinkConfig(type="opensearch"), {})
    assert isinstance(sink.classify(busy), TransientError)
    assert isinstance(sink.classify(down), TransientError)
    assert isinstance(sink.classify(refused), FatalError)
    assert str(sink.classify(busy)).startswith("opensearch: status 429: ")
    assert str(sink.classify(down)).startswith("opensearch: ConnectionError: ")
