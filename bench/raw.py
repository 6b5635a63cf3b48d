"""The baseline: the same documents bulk-written straight into each store.

Same client libraries and settings as the sinks, no version guard, no Kafka:
Redis pipelined ``SET`` of JSON, Elasticsearch ``_bulk`` index actions
(pre-serialized NDJSON, 2,000 per request like one worker batch), MongoDB
``insert_many`` (unordered) into an empty collection. Targets are fresh and
dropped afterwards.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import elasticsearch
import pymongo

from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.mongodb import MongoSinkConfig
from connectors.redis import RedisSinkConfig

logger = logging.getLogger(__name__)

CHUNK = 2000
Docs = list[tuple[str, dict[str, Any]]]


def _timed(write: Callable[[], None]) -> float:
    start = time.perf_counter()
    write()
    return time.perf_counter() - start


def redis_rate(cfg: RedisSinkConfig, prefix: str, docs: Docs) -> float:
    client = cfg.connect(decode_responses=True)

    def write() -> None:
        for start in range(0, len(docs), CHUNK):
            pipe = client.pipeline(transaction=False)
            for ident, doc in docs[start : start + CHUNK]:
                pipe.set(
                    f"{prefix}:{ident}",
                    json.dumps(doc, ensure_ascii=False, separators=(",", ":")),
                )
            pipe.execute()

    try:
        elapsed = _timed(write)
        keys = [k for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
        for start in range(0, len(keys), 5000):
            client.unlink(*keys[start : start + 5000])
    finally:
        client.close()
    return len(docs) / elapsed


def elasticsearch_rate(cfg: ElasticsearchSinkConfig, index: str, docs: Docs) -> float:
    client = elasticsearch.Elasticsearch(cfg.hosts, request_timeout=cfg.timeout_s)
    client.indices.create(
        index=index, settings={"number_of_shards": 1, "number_of_replicas": 0}
    )

    def write() -> None:
        for start in range(0, len(docs), CHUNK):
            lines: list[str] = []
            for ident, doc in docs[start : start + CHUNK]:
                lines.append(json.dumps({"index": {"_index": index, "_id": ident}}))
                lines.append(json.dumps(doc, ensure_ascii=False))
            # Pre-serialized NDJSON lines, which the client passes through; its
            # annotation allows mappings only.
            resp = client.bulk(operations=lines)  # type: ignore[arg-type]
            if resp["errors"]:
                raise RuntimeError("raw elasticsearch bulk reported errors")

    try:
        return len(docs) / _timed(write)
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


def mongodb_rate(cfg: MongoSinkConfig, collection: str, docs: Docs) -> float:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        cfg.uri.get_secret_value(), socketTimeoutMS=int(cfg.timeout_s * 1000) * 6
    )
    coll = client[cfg.database][collection]
    coll.drop()

    def write() -> None:
        for start in range(0, len(docs), CHUNK):
            coll.insert_many(
                [{**doc, "_id": ident} for ident, doc in docs[start : start + CHUNK]],
                ordered=False,
            )

    try:
        return len(docs) / _timed(write)
    finally:
        coll.drop()
        client.close()
