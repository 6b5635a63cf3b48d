"""A view whose documents would carry a field its store keeps for itself is
refused when the sink opens (connectors.base.refuse_reserved); the
integration test tests/integration/test_reserved_fields.py runs it on the stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.base import ViewTarget, refuse_reserved
from connectors.elasticsearch import store as es_store
from connectors.mongodb import store as mongo_store
from pipeline.errors import ConfigError, TransientError
from pipeline.fieldtypes import FieldType, Shape, level

TEXT = FieldType("text")


def target(shape: Shape, transformed: bool = False) -> ViewTarget:
    return ViewTarget("legacy", "legacy", {}, lambda: shape, transformed)


def test_a_reserved_column_names_the_view_the_column_and_the_ways_out() -> None:
    shape = {"id": TEXT, "_id": TEXT, "_deleted": FieldType("boolean")}
    with pytest.raises(ConfigError) as err:
        refuse_reserved("docs", "mongodb", target(shape), mongo_store.RESERVED_FOR)
    text = str(err.value)
    assert text.startswith("views.legacy: its documents would carry the field '_id'")
    assert "sinks.docs (mongodb) keeps for the document id" in text
    assert "views.legacy.exclude: [_id]" in text
    assert "{type: rename, fields: {_id: another}}" in text
    assert "rename: {_id: another}" in text
    assert text.endswith("(also reserved there: _deleted)")


def test_elasticsearch_keeps_its_metadata_fields_and_the_tombstone_flag() -> None:
    for name in ("_id", "_source", "_routing", "_version", "_deleted"):
        with pytest.raises(ConfigError, match=repr(name)):
            refuse_reserved(
                "search", "elasticsearch", target({name: TEXT}), es_store.RESERVED
            )
    # readside's version field is not Elasticsearch's: it may be a column there
    refuse_reserved("search", "elasticsearch", target({"_v": TEXT}), es_store.RESERVED)


def test_nested_fields_transformed_views_and_an_unreadable_source_pass() -> None:
    nested = {"id": TEXT, "notes": level({"_id": TEXT}, array=True)}
    refuse_reserved("docs", "mongodb", target(nested), mongo_store.RESERVED_FOR)
    # a transform may rename the column: the write refuses what still has it
    refuse_reserved(
        "docs", "mongodb", target({"_id": TEXT}, True), mongo_store.RESERVED_FOR
    )

    def down() -> Shape:
        raise TransientError("source not reachable")

    gone = ViewTarget("legacy", "legacy", {}, down)
    refuse_reserved("docs", "mongodb", gone, mongo_store.RESERVED_FOR)


def test_the_derived_mapping_leaves_reserved_columns_to_the_transform() -> None:
    sink = es_store.ElasticsearchStore.__new__(es_store.ElasticsearchStore)
    sink.name, sink.store = "search", "elasticsearch"
    shape = {"_id": TEXT, "name": TEXT, "_deleted": FieldType("boolean")}
    props = sink._mappings(target(shape, transformed=True))["properties"]
    assert "_id" not in props
    assert props["name"]["type"] == "text"
    assert "_deleted" not in props  # mapped as the tombstone flag on creation


def test_each_store_checks_its_own_names() -> None:
    from connectors.mongodb.sink import MongoSink
    from connectors.redis.sink import RedisSink
    from pipeline import config

    shape = {"id": TEXT, "_v": TEXT}
    mongo_cfg = config.MongoSinkConfig(type="mongodb", uri="mongodb://127.0.0.1:1/")
    docs = MongoSink("docs", mongo_cfg, {"legacy": target(shape)})
    with pytest.raises(ConfigError, match=r"sinks\.docs \(mongodb\) keeps for the d"):
        docs.check_reserved()
    docs.close()
    cache = RedisSink(
        "cache", config.RedisSinkConfig(type="redis"), {"legacy": target(shape)}
    )
    cache.check_reserved()  # Redis keeps none of them


def test_an_unreachable_source_is_asked_once_per_open() -> None:
    from connectors.redis.sink import RedisSink
    from pipeline import config

    asked: list[str] = []

    def down(view: str) -> Callable[[], Shape]:
        def read() -> Shape:
            asked.append(view)
            raise TransientError("source not reachable")

        return read

    targets = {v: ViewTarget(v, v, {}, down(v)) for v in ("a", "b", "c")}
    sink = RedisSink("cache", config.RedisSinkConfig(type="redis"), targets)
    sink.check_reserved()
    assert asked == ["a"]  # each would wait out the connect timeout
