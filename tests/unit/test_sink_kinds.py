"""Kinds of sink: found by entry point from the config's ``type:``, each one
module with its config model, sink and reads."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from repo_config import repo_config_path

from connectors.base import SinkKind, Stored, ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.memory import MemorySink, MemorySinkConfig
from connectors.mongodb.sink import MongoSink
from connectors.reads import Filterable, Searchable
from connectors.redis import RedisSinkConfig
from connectors.redis.sink import RedisSink
from connectors.registry import build_sink, build_sinks
from pipeline import config, sinktypes
from pipeline.errors import ConfigError
from pipeline.events import Upsert
from query import ReadClient
from query.errors import StoreUnavailable
from query.freshness import FreshnessCache
from query.validate import where

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def parse_error(sink: object) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse({**GOOD, "sinks": {**GOOD["sinks"], "cache": sink}})
    return str(info.value)


def test_sink_kinds_pyproject_declares_the_shipped_kinds() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][sinktypes.GROUP] == sinktypes.SHIPPED


def test_config_unknown_sink_type_names_field_and_known_types() -> None:
    msg = parse_error({"type": "redsi"})
    assert (
        "sinks.cache.type: unknown sink type 'redsi' "
        "(known: elasticsearch, memory, mongodb, opensearch, redis)"
    ) in msg


def test_config_sink_without_type_names_field() -> None:
    msg = parse_error({"url": "redis://x"})
    assert "sinks.cache.type: Field required (known: elasticsearch" in msg


def test_config_sink_model_errors_prefixed_with_name_and_type() -> None:
    msg = parse_error({"type": "redis", "timeout_s": -1, "nope": 1})
    assert "sinks.cache.redis.timeout_s: Input should be greater than 0" in msg
    assert "sinks.cache.redis.nope: Extra inputs are not permitted" in msg


def test_config_sink_entries_are_their_kinds_models() -> None:
    cfg = config.parse(GOOD)
    assert type(cfg.sinks["cache"]) is RedisSinkConfig
    assert type(cfg.sinks["cache"]) is config.RedisSinkConfig  # the old name
    assert cfg.model_dump()["sinks"]["cache"]["docs_per_call"] == 200


def test_config_schema_imports_no_store_module() -> None:
    tree = (REPO / "pipeline" / "config.py").read_text()
    tree += (REPO / "pipeline" / "sinktypes.py").read_text()
    assert "import connectors" not in tree
    assert "from connectors" not in tree


def test_memory_sink_type_from_yaml_builds_memory_sink_with_knobs() -> None:
    views = {"orders": {"table": "public.orders", "sinks": ["scratch"]}}
    store = f"test-{uuid.uuid4().hex}"
    scratch = {"type": "memory", "store": store, "reject_ids": ["bad"], "seed": 1}
    cfg = config.parse({**GOOD, "sinks": {"scratch": scratch}, "views": views})
    assert cfg.sinks["scratch"] == MemorySinkConfig(
        type="memory", store=store, reject_ids=["bad"], seed=1
    )
    sink = build_sinks(cfg, ["scratch"])["scratch"]
    assert isinstance(sink, MemorySink)
    assert sink.targets == {"orders": ViewTarget("orders", "orders", {})}
    result = sink.write(
        [Upsert("orders", "1", 1, {"a": 1}), Upsert("orders", "bad", 1, {"a": 2})]
    )
    assert result.applied == 1
    assert [op.doc_id for op, _why in result.rejected] == ["bad"]
    # Another sink built from the config in this process reads the same store.
    reader = build_sinks(cfg, ["scratch"])["scratch"]
    assert reader is not sink
    assert reader.fetch("orders", ["1"]) == {"1": Stored(1, {"a": 1})}


def test_build_sink_with_another_kinds_settings_refused() -> None:
    cfg = MemorySinkConfig(type="memory")
    sink = build_sink("scratch", cfg, {})
    assert isinstance(sink, MemorySink)
    redis = sinktypes.kind("redis")
    assert isinstance(redis, SinkKind)
    with pytest.raises(ConfigError, match=r"sinks\.cache: not a redis sink"):
        redis.build("cache", cfg, {})


def test_store_sinks_offer_the_reads_of_their_store() -> None:
    targets = {"v": ViewTarget("v", "v", {"indexes": {"status": "eq", "n": "range"}})}
    redis = RedisSink("cache", RedisSinkConfig(type="redis"), targets)
    assert isinstance(redis, Filterable)
    assert not isinstance(redis, Searchable)
    assert redis.covers("v", where({"status": "new", "n": {"gt": 1}}))
    assert redis.covers("v", where({"n": 3}))
    assert not redis.covers("v", where({"status": {"gt": 1}}))
    assert not redis.covers("v", where({"other": 1}))
    docs = build_sink("docs", config.parse(GOOD).sinks["docs"], targets)
    assert isinstance(docs, MongoSink)
    assert isinstance(docs, Filterable)
    assert docs.covers("v", where({"other": 1}))
    search = build_sink("search", config.parse(GOOD).sinks["search"], targets)
    assert isinstance(search, ElasticsearchSink)
    assert isinstance(search, Searchable)
    assert not isinstance(search, Filterable)
    assert not isinstance(MemorySink(), Filterable | Searchable)


@pytest.fixture
def shelf_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fourth store outside readside: one module plus its entry point."""
    (tmp_path / "readside_shelf.py").write_text(
        "from typing import Literal\n"
        "from connectors.base import SinkKind\n"
        "from connectors.memory import MemorySink\n"
        "from pipeline.sinktypes import SinkConfig\n\n"
        "class ShelfConfig(SinkConfig):\n"
        '    type: Literal["shelf"]\n'
        "    depth: int = 1\n\n"
        "class ShelfSink(MemorySink):\n"
        '    store = "shelf"\n\n'
        "def build(name, cfg, targets):\n"
        "    return ShelfSink(name, targets=targets)\n\n"
        'KIND = SinkKind("shelf", ShelfConfig, build)\n'
    )
    dist = tmp_path / "readside_shelf-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: readside-shelf\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[readside.sinks]\n"
        "shelf = readside_shelf:KIND\n"
        "redis = readside_shelf:KIND\n"  # a shipped name: the shipped kind wins
        "broken = readside_no_such_module:KIND\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "shelf"
    sinktypes.kind.cache_clear()
    sys.modules.pop("readside_shelf", None)


def test_fourth_store_by_entry_point_usable_from_yaml(shelf_store: str) -> None:
    views = {"orders": {"table": "public.orders", "sinks": ["shelf"]}}
    data = {**GOOD, "sinks": {"shelf": {"type": shelf_store}}, "views": views}
    cfg = config.parse(data)
    sink = build_sinks(cfg, ["shelf"])["shelf"]
    assert type(sink).__name__ == "ShelfSink"
    assert sink.write([Upsert("orders", "1", 1, {"a": 1})]).applied == 1
    assert sinktypes.kind("redis").config is RedisSinkConfig
    assert "shelf" in parse_error({"type": "nope"})


def test_sink_type_whose_module_is_missing_names_it(shelf_store: str) -> None:
    msg = parse_error({"type": "broken"})
    assert "sinks.cache.type: sink type 'broken' cannot be loaded" in msg
    assert "readside_no_such_module" in msg


@pytest.mark.parametrize(
    ("sink", "target", "problem"),
    [
        ("docs", "system.x", "'system.x' is not a valid MongoDB collection name"),
        ("docs", "a$b", "'a$b' is not a valid MongoDB collection name"),
        ("search", "Upper", "'Upper' is not a valid Elasticsearch index name"),
        ("search", "_x", "an index name cannot start with '_'"),
        ("cache", "any:thing", None),
        ("docs", "customers.eu", None),
    ],
)
def test_sink_config_target_problem_is_the_stores_own(
    sink: str, target: str, problem: str | None
) -> None:
    got = config.parse(GOOD).sinks[sink].target_problem(target)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert problem in got


def test_sink_config_targets_overlap_only_where_the_store_shares_keys() -> None:
    sinks = config.parse(GOOD).sinks
    assert sinks["cache"].targets_overlap("orders", "orders:eu")
    assert sinks["cache"].targets_overlap("orders#x", "orders")
    assert not sinks["cache"].targets_overlap("orders", "orders.eu")
    assert not sinks["docs"].targets_overlap("orders", "orders:eu")
    assert sinks["docs"].targets_overlap("orders", "orders")


@pytest.fixture
def down_client() -> Iterator[ReadClient]:
    """A read client whose stores are all unreachable (a closed port)."""
    closed, fast = "127.0.0.1:9", {"timeout_s": 0.2}
    cfg = config.parse(
        {
            "source": {"dsn": "postgresql://x@127.0.0.1:9/x", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": closed},
            "sinks": {
                "mongo": {"type": "mongodb", "uri": f"mongodb://{closed}/", **fast},
                "es": {"type": "elasticsearch", "hosts": [f"http://{closed}"], **fast},
                "redis": {"type": "redis", "url": f"redis://{closed}/0", **fast},
                "scratch": {"type": "memory", "store": f"t-{uuid.uuid4().hex}"},
            },
            "views": {
                "t": {
                    "table": "public.t",
                    "sinks": ["mongo", "es", "redis", "scratch"],
                    "sink_options": {"redis": {"indexes": {"status": "eq"}}},
                }
            },
        }
    )
    with ReadClient(cfg, freshness=FreshnessCache(cfg.kafka, "cp")) as client:
        yield client


def test_read_client_filter_asks_covering_index_first_then_mongodb(
    down_client: ReadClient,
) -> None:
    with pytest.raises(StoreUnavailable) as covered:
        down_client.filter("t", {"status": "new"})
    assert covered.value.stores == ["redis", "mongo"]
    with pytest.raises(StoreUnavailable) as uncovered:
        down_client.filter("t", {"other": 1})
    assert uncovered.value.stores == ["mongo"]


def test_read_client_search_asks_searchable_sinks_only(
    down_client: ReadClient,
) -> None:
    with pytest.raises(StoreUnavailable) as info:
        down_client.search("t", "x")
    assert info.value.stores == ["es"]


def test_config_load_imports_no_store_driver() -> None:
    path = repo_config_path()
    code = (
        "import sys\n"
        "from pipeline import config\n"
        f"config.load({str(path)!r}, env={{}})\n"
        # a kind that reuses another's settings (opensearch) imports no driver
        "import yaml\n"
        f"raw = yaml.safe_load(open({str(path)!r}))\n"
        "raw['sinks']['os'] = {'type': 'opensearch'}\n"
        "config.Config.model_validate(raw)\n"
        "drivers = ('redis', 'elasticsearch', 'pymongo', 'connectors.redis.sink',\n"
        "           'opensearchpy', 'connectors.opensearch.sink')\n"
        "print([m for m in drivers if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
