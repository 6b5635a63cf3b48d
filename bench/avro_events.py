"""The benchmark's change events in Avro, as the connector writes them.

With ``kafka.format: avro`` the connector's converter (Apicurio's
AvroConverter) turns Debezium's Connect schemas into Avro schemas the way
:func:`pipeline.source.avro_schema.connect_schema` reads them back: a struct
is a record named after the struct (namespace and name split at the last
dot), an optional field a ``["null", T]`` union with a null default (``[T,
"null"]`` with its default when it has one), ``int8``/``int16`` an ``int``
with ``connect.type``, and a schema's version, parameters, default and name
go to ``connect.version``, ``connect.parameters``, ``connect.default`` and
``connect.name``. A record met a second time is written as its name, short
when it is in the enclosing record's namespace.

:class:`AvroSchemas` are the key and value schemas of
:class:`bench.events.Envelopes` in that shape; :func:`register` registers
them under the topic's subjects through the registry's Confluent-compatible
API, which answers with the ids the records carry; :func:`records` encodes
the payloads of :func:`bench.events.payloads` (the same rows and source
blocks as the JSON records) in the Confluent wire format: a zero magic
byte, the schema id as 4 big-endian bytes, the Avro binary datum.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from bench import events
from pipeline.source.registry import CCOMPAT_PATH

logger = logging.getLogger(__name__)

_PRIMITIVE = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float32": "float",
    "float64": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
#: Connect types whose JSON payload value is not already the Avro datum
#: (bytes are base64 text in JSON, floats may be text): the rows of the
#: benchmark have none, so a payload is its own datum.
_NOT_AS_IN_JSON = {"bytes", "float32", "float64", "float", "double"}


def _split(name: str) -> tuple[str | None, str]:
    if "." not in name:
        return None, name
    space, short = name.rsplit(".", 1)
    return space, short


def avro_schema(
    connect: Mapping[str, Any], defined: set[str], space: str | None = None
) -> Any:
    """The Avro schema of a Connect schema, as the connector's converter
    writes it; ``defined`` collects the records' full names, ``space`` is
    the enclosing record's namespace."""
    kind = connect["type"]
    base: Any
    if kind == "struct":
        full = connect.get("name", "io.confluent.connect.avro.ConnectDefault")
        own_space, short = _split(full)
        if full in defined:
            base = short if own_space == space else full
        else:
            defined.add(full)
            base = {"type": "record", "name": short}
            if own_space != space and own_space is not None:
                base["namespace"] = own_space
            base["fields"] = [_field(f, defined, own_space) for f in connect["fields"]]
    elif kind == "array":
        base = {"type": "array", "items": avro_schema(connect["items"], defined, space)}
    elif kind == "map":
        base = {"type": "map", "values": avro_schema(connect["values"], defined, space)}
    else:
        base = {"type": _PRIMITIVE[kind]}
        if kind in ("int8", "int16"):
            base["connect.type"] = kind
    if isinstance(base, dict):
        if "version" in connect:
            base["connect.version"] = connect["version"]
        if "parameters" in connect:
            base["connect.parameters"] = dict(connect["parameters"])
        if connect.get("default") is not None:
            base["connect.default"] = connect["default"]
        if "name" in connect:
            base["connect.name"] = connect["name"]
        if len(base) == 1:  # a primitive without properties is its name
            base = base["type"]
    if not connect.get("optional"):
        return base
    if connect.get("default") is not None:
        return [base, "null"]
    return ["null", base]


def _field(
    connect: Mapping[str, Any], defined: set[str], space: str | None
) -> dict[str, Any]:
    field: dict[str, Any] = {
        "name": connect["field"],
        "type": avro_schema(connect, defined, space),
    }
    if connect.get("default") is not None:
        field["default"] = connect["default"]
    elif connect.get("optional"):
        field["default"] = None
    return field


def _kinds(connect: Mapping[str, Any]) -> Iterator[str]:
    yield str(connect["type"])
    for f in connect.get("fields", ()):
        yield from _kinds(f)
    for part in ("items", "values"):
        if part in connect:
            yield from _kinds(connect[part])


@dataclass(frozen=True)
class AvroSchemas:
    """The key and value schemas of one topic's records, in Avro."""

    key: dict[str, Any]
    value: dict[str, Any]

    @classmethod
    def of(cls, prefix: str) -> AvroSchemas:
        env = events.Envelopes(prefix)
        key, value = json.loads(env.key_schema), json.loads(env.value_schema)
        odd = _NOT_AS_IN_JSON.intersection(_kinds(value))
        if odd:  # the payloads are written as the datums: see _NOT_AS_IN_JSON
            raise ValueError(f"bench rows with {sorted(odd)} need a datum mapping")
        return cls(avro_schema(key, set()), avro_schema(value, set()))


#: a registry login: (username, password), sent as HTTP basic credentials
Login = tuple[str, str] | None


def _call(
    url: str, method: str, login: Login, body: dict[str, Any] | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def register(
    registry_url: str, topic: str, schemas: AvroSchemas, login: Login
) -> tuple[int, int]:
    """Register the schemas under ``<topic>-key`` and ``<topic>-value``, as
    ``login`` (a client that may write, as the connector's converter is).

    Returns:
        The key's and the value's schema ids, as records carry them.
    """
    base = registry_url.rstrip("/") + CCOMPAT_PATH
    ids = []
    for side, schema in (("key", schemas.key), ("value", schemas.value)):
        url = f"{base}/subjects/{topic}-{side}/versions"
        answer = _call(url, "POST", login, {"schema": json.dumps(schema)})
        ids.append(int(answer["id"]))
    logger.info("registered schemas topic=%s key_id=%d value_id=%d", topic, *ids)
    return ids[0], ids[1]


def unregister(registry_url: str, topic: str, login: Login) -> None:
    """Delete the topic's subjects (best effort: the bench cleans up after)."""
    base = registry_url.rstrip("/") + CCOMPAT_PATH
    for side in ("key", "value"):
        for query in ("", "?permanent=true"):
            try:
                _call(f"{base}/subjects/{topic}-{side}{query}", "DELETE", login)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                logger.debug("subject not deleted topic=%s error=%s", topic, exc)


def unregister_all(registry_url: str, prefix: str, login: Login) -> None:
    """Delete every subject of the topics under ``prefix`` (best effort)."""
    base = registry_url.rstrip("/") + CCOMPAT_PATH
    try:
        subjects = _call(f"{base}/subjects", "GET", login)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.warning("subjects not listed error=%s", exc)
        return
    for subject in subjects:
        if subject.startswith(f"{prefix}."):
            for query in ("", "?permanent=true"):
                try:
                    _call(f"{base}/subjects/{subject}{query}", "DELETE", login)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    logger.debug("subject not deleted %s error=%s", subject, exc)


def records(
    prefix: str, count: int, key_id: int, value_id: int, seed: int = 7
) -> Iterator[tuple[bytes, bytes]]:
    """``count`` (key, value) records in Avro: the changes of
    :func:`bench.events.records` for the same arguments."""
    schemas = AvroSchemas.of(prefix)
    key_schema = fastavro.parse_schema(schemas.key)
    value_schema = fastavro.parse_schema(schemas.value)
    key_head = b"\x00" + key_id.to_bytes(4, "big")
    value_head = b"\x00" + value_id.to_bytes(4, "big")
    for key, payload in events.payloads(prefix, count, seed):
        out = io.BytesIO()
        out.write(key_head)
        fastavro.schemaless_writer(out, key_schema, key)
        raw_key = out.getvalue()
        out = io.BytesIO()
        out.write(value_head)
        fastavro.schemaless_writer(out, value_schema, payload)
        yield raw_key, out.getvalue()
