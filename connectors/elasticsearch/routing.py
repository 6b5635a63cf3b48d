"""Where the writes of one document go in a view routed by a field.

The version guard of Elasticsearch (``version_type=external``) compares a
write with the document of the same ``_id`` *on the shard the write is routed
to*. In a view with a ``routing_field`` every write of an id must therefore
reach the one copy of that id, or an older write lands beside a newer one on
another shard and is applied.

A document lives where its routing value sends it (``routing=<field value>``;
the value must never change for a row, docs/configuration.md). A delete
finds that copy first (a search over every shard) and leaves its tombstone
there. A delete of a document the store does not hold cannot know the routing
value, so its tombstone goes where no routing sends it: the shard of its id.
Hence, before an upsert is sent, the copy on the shard of its id is read
(one realtime ``mget`` per batch, no refresh): a copy there that is not the
upsert's own (no routing, or another routing value) is a tombstone of a delete
of an absent document, or a document whose routing value changed. If it holds
a version at least as new, the upsert is stale and is not sent; if older, the
upsert is written at its routing and that copy is removed afterwards (a delete
at the upsert's version, which conflicts, harmlessly, when both land on the
same shard and so are one document).

Limits: the look-up and the write are two requests, so a delete of an absent
document racing a concurrent first upsert of the same id (two writers of one
id at the same moment, e.g. a ``dlq replay`` beside the worker) can still
place them on different shards; and a routing value that changes while the
old copy lives on another shard than the id's leaves that copy in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import elasticsearch

from connectors.elasticsearch.store import blocked
from pipeline.errors import TransientError
from pipeline.events import DocumentOp, Upsert

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of an id that an upsert must win over (or lose to)."""

    routing: str | None
    version: int


def routing_of(op: Upsert, field: str) -> str | None:
    """The routing value of an upsert (``None``: routed by its id)."""
    value = op.doc.get(field)
    return None if value is None else str(value)


def mget_found(resp: Any) -> list[dict[str, Any]]:
    """The documents an ``mget`` found.

    An entry with an ``error`` (its shard not available yet, as for a few
    seconds after a restart) is not a document that does not exist: reading
    it as one would serve a live document as deleted and let writes that
    look up copies miss them.

    Raises:
        TransientError: some entry could not be read.
    """
    docs: list[dict[str, Any]] = resp["docs"]
    failed = [d for d in docs if d.get("error")]
    if failed:
        err = failed[0]["error"]
        reason = err.get("reason") if isinstance(err, Mapping) else err
        raise TransientError(
            f"elasticsearch: {len(failed)} of {len(docs)} ids unreadable "
            f"(index {failed[0].get('_index')}): {reason}"
        )
    return [d for d in docs if d.get("found")]


def other_copies(
    client: elasticsearch.Elasticsearch,
    alias: str,
    field: str,
    upserts: Sequence[Upsert],
) -> dict[str, Copy]:
    """Copies held on the shard of each upsert's id under another routing."""
    if not upserts:
        return {}
    resp = client.mget(index=alias, ids=[u.doc_id for u in upserts], source=False)
    found = {str(d["_id"]): d for d in mget_found(resp)}
    out: dict[str, Copy] = {}
    for up in upserts:
        doc = found.get(up.doc_id)
        if doc is None:
            continue
        held = doc.get("_routing")
        if held != routing_of(up, field):
            out[up.doc_id] = Copy(held, int(doc["_version"]))
    return out


def removal(alias: str, op: DocumentOp, copy: Copy) -> str:
    """The bulk line removing ``copy`` once ``op`` (newer) is written."""
    meta: dict[str, Any] = {
        "_index": alias,
        "_id": op.doc_id,
        "version": op.version,
        "version_type": "external",
    }
    if copy.routing is not None:
        meta["routing"] = copy.routing
    return json.dumps({"delete": meta})


def remove_copies(
    client: elasticsearch.Elasticsearch, lines: list[str], kwargs: Mapping[str, Any]
) -> None:
    """Run the removals; a conflict or a missing copy means nothing to remove.

    Raises:
        TransientError: the store could not run some of them now (the batch
            is retried; the upserts are then stale and the removals run again).
    """
    if not lines:
        return
    resp = client.bulk(operations=lines, **kwargs)  # type: ignore[arg-type]
    for item in resp["items"]:
        status = int(item["delete"]["status"])
        if status == 429 or status >= 500 or blocked(item["delete"].get("error")):
            raise TransientError(
                f"elasticsearch: removing an old copy failed with status {status}: "
                f"{item['delete'].get('error')}"
            )
        if status >= 300 and status not in (404, 409):
            logger.warning(
                "elasticsearch old copy kept id=%s status=%d error=%s",
                item["delete"].get("_id"),
                status,
                item["delete"].get("error"),
            )
