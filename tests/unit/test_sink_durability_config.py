from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from repo_config import write_config

from connectors.base import ViewTarget
from connectors.mongodb.sink import MongoSink
from connectors.redis.sink import RedisSink
from pipeline import config
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def _load(tmp_path: Path, sinks: dict[str, object]) -> config.Config:
    data = {**GOOD, "sinks": {**GOOD["sinks"], **sinks}}
    return config.load(write_config(tmp_path, data), env={})


def test_sink_durability_settings_default_to_the_stores_own(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {})
    cache, search, docs = (cfg.sinks[n] for n in ("cache", "search", "docs"))
    assert isinstance(cache, config.RedisSinkConfig)
    assert (cache.wait_aof, cache.wait_replicas) == (False, 0)
    assert isinstance(search, config.ElasticsearchSinkConfig)
    assert search.wait_for_active_shards is None
    assert isinstance(docs, config.MongoSinkConfig)
    assert docs.write_concern is None


def test_sink_durability_settings_load_from_yaml(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        {
            "cache": {"type": "redis", "wait_aof": True, "wait_replicas": 1},
            "search": {"type": "elasticsearch", "wait_for_active_shards": "all"},
            "docs": {"type": "mongodb", "write_concern": {"w": "majority", "j": True}},
        },
    )
    cache, search, docs = (cfg.sinks[n] for n in ("cache", "search", "docs"))
    assert isinstance(cache, config.RedisSinkConfig)
    assert (cache.wait_aof, cache.wait_replicas, cache.wait_timeout_ms) == (
        True,
        1,
        1000,
    )
    assert isinstance(search, config.ElasticsearchSinkConfig)
    assert search.wait_for_active_shards == "all"
    assert isinstance(docs, config.MongoSinkConfig)
    assert docs.write_concern == config.MongoWriteConcern(w="majority", j=True)


def test_sink_wait_for_active_shards_zero_refused_naming_field(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"sinks\.search\.elasticsearch\.wait_for_active_shards"
    ):
        _load(
            tmp_path, {"search": {"type": "elasticsearch", "wait_for_active_shards": 0}}
        )


def test_redis_sink_tombstones_kept_forever_by_default() -> None:
    cfg = config.RedisSinkConfig(type="redis")
    sink = RedisSink("cache", cfg, {"v": ViewTarget("v", "v")})
    assert sink._layout("v", 1).tomb_ttl == 0  # no connection needed


def test_mongodb_sink_write_concern_option_over_uri() -> None:
    cfg = config.MongoSinkConfig(
        type="mongodb",
        uri="mongodb://127.0.0.1:1/?w=majority&journal=true",
        write_concern=config.MongoWriteConcern(w=1, wtimeout_ms=500),
    )
    sink = MongoSink("docs", cfg, {})
    assert sink.write_concern == {"w": 1, "j": True, "wtimeout": 500}
    sink.close()
