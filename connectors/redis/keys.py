"""Key names, the guard script and value encodings of the Redis store.

What :mod:`connectors.redis.sink` sends to the server: the layout of a view's
keys in each generation (see the sink's module docstring), the Lua script
that guards every write, and how documents, index values and score bounds
are written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connectors.base import ViewTarget
from connectors.reads import Condition, Eq, Scalar, instant
from pipeline.errors import BadRecord, FatalError
from pipeline.jsonforms import document_json_bytes

#: Tombstones are kept forever by default: expiring one lets a later replay
#: of an older write resurrect the document.
DEFAULT_TOMBSTONE_TTL_S = 0
#: KEYS, per document: doc key, version key[, index-values key].
#: ARGV: generation key, the generations the caller saw (``live`` or
#: ``live>mirror``, see :func:`state_text`), n, tombstone ttl,
#: doc ttl, index key base, m, m x (field, kind), then per document: op
#: ("u"/"d"), version, body, id, m index values ("" = no value, else "="
#: followed by the value).
#: Returns one status per document: 1 applied, 0 stale; or the error
#: ``READSIDE_MOVED <generations>`` and writes nothing when the view's
#: generations are no longer the ones the caller saw (a rebuild began
#: mirroring or switched): the caller builds the keys again and retries.
GUARD_SCRIPT = """
local live = redis.call('GET', ARGV[1]) or '1'
local mirror = redis.call('GET', ARGV[1] .. '.mirror')
if mirror then live = live .. '>' .. mirror end
if live ~= ARGV[2] then
  return redis.error_reply('READSIDE_MOVED ' .. live)
end
local n = tonumber(ARGV[3])
local tomb_ttl = tonumber(ARGV[4])
local doc_ttl = tonumber(ARGV[5])
local base = ARGV[6]
local m = tonumber(ARGV[7])
local fields, kinds = {}, {}
local a = 8
for j = 1, m do
  fields[j] = ARGV[a]
  kinds[j] = ARGV[a + 1]
  a = a + 2
end
local step = 2
if m > 0 then step = 3 end
local out = {}
for i = 1, n do
  local k = (i - 1) * step
  local dkey, vkey = KEYS[k + 1], KEYS[k + 2]
  local op, ver, body, id = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  local have = redis.call('GET', vkey)
  if have and have >= ver then
    out[i] = 0
  else
    if op == 'u' then
      if doc_ttl > 0 then
        redis.call('SET', dkey, body, 'EX', doc_ttl)
        redis.call('SET', vkey, ver, 'EX', doc_ttl)
      else
        redis.call('SET', dkey, body)
        redis.call('SET', vkey, ver)
      end
    else
      redis.call('DEL', dkey)
      if tomb_ttl > 0 then
        redis.call('SET', vkey, ver, 'EX', tomb_ttl)
      else
        redis.call('SET', vkey, ver)
      end
    end
    if m > 0 then
      local ikey = KEYS[k + 3]
      for j = 1, m do
        local new = ARGV[a + j - 1]
        if op ~= 'u' then new = '' end
        local old = redis.call('HGET', ikey, fields[j])
        if not old then old = '' end
        if old ~= new then
          if old ~= '' then
            if kinds[j] == 'eq' then
              redis.call('SREM', base .. fields[j] .. ':' .. string.sub(old, 2), id)
            else
              redis.call('ZREM', base .. fields[j], id)
            end
          end
          if new ~= '' then
            if kinds[j] == 'eq' then
              redis.call('SADD', base .. fields[j] .. ':' .. string.sub(new, 2), id)
            else
              redis.call('ZADD', base .. fields[j], string.sub(new, 2), id)
            end
            redis.call('HSET', ikey, fields[j], new)
          else
            redis.call('HDEL', ikey, fields[j])
          end
        end
      end
    end
    out[i] = 1
  end
  a = a + m
end
return out
"""


def generation_prefix(base: str, gen: int) -> str:
    """The key prefix of generation ``gen`` of a view whose target is ``base``."""
    return base if gen == 1 else f"{base}~{gen}"


class Layout:
    """Key names and write options of one generation of one view's target."""

    def __init__(self, target: ViewTarget, gen: int = 1) -> None:
        opts = target.options
        self.gen = gen
        self.prefix = generation_prefix(target.name, gen)
        #: holds the live generation; outside the ``p:*`` / ``p#*`` key space
        #: of every generation, so dropping one never touches it
        self.generation_key = f"{target.name}@gen"
        #: holds the generation a rebuild is filling (absent: none)
        self.mirror_key = f"{self.generation_key}.mirror"
        #: present while the store holds the whole view (:meth:`loaded`)
        self.loaded_key = f"{target.name}@loaded"
        self.hash_tag = bool(opts.get("hash_tag", False))
        self.doc_ttl = int(opts.get("ttl_s", 0) or 0)
        self.tomb_ttl = int(opts.get("tombstone_ttl_s", DEFAULT_TOMBSTONE_TTL_S))
        indexes: Mapping[str, str] = opts.get("indexes") or {}
        for field, kind in indexes.items():
            if kind not in ("eq", "range"):
                raise FatalError(
                    f"redis: view {target.view}: index {field!r} has kind {kind!r}, "
                    "expected 'eq' or 'range'"
                )
        self.indexes = dict(indexes)

    def _id(self, doc_id: str) -> str:
        return f"{{{doc_id}}}" if self.hash_tag else doc_id

    def doc_key(self, doc_id: str) -> str:
        return f"{self.prefix}:{self._id(doc_id)}"

    def version_key(self, doc_id: str) -> str:
        return f"{self.prefix}#v:{self._id(doc_id)}"

    def index_values_key(self, doc_id: str) -> str:
        return f"{self.prefix}#ix:{self._id(doc_id)}"

    @property
    def index_base(self) -> str:
        return f"{self.prefix}#idx:"

    def id_of(self, doc_key: str) -> str:
        raw = doc_key[len(self.prefix) + 1 :]
        if self.hash_tag and raw.startswith("{") and raw.endswith("}"):
            return raw[1:-1]
        return raw


def state_text(live: int, mirror: int | None) -> str:
    """What the guard script compares: ``live`` or ``live>mirror``."""
    return str(live) if mirror is None else f"{live}>{mirror}"


def parse_state(text: str | None, mirror: str | None = None) -> tuple[int, int | None]:
    """(live, mirror) from ``p@gen`` (and ``p@gen.mirror``) or a script's
    ``READSIDE_MOVED`` text."""
    if text and ">" in text:
        live, _, mirror = text.partition(">")
        return int(live), int(mirror)
    return (int(text) if text else 1), (int(mirror) if mirror else None)


def index_value(kind: str, value: Any) -> str:
    """The script's form of one index value; raises BadRecord if unusable."""
    if value is None:
        return ""
    if kind == "range":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadRecord("index", f"range index value {value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            number = _instant_score(value)
        if math.isnan(number):
            raise BadRecord("index", "range index value is NaN")
        return "=" + repr(number)
    if isinstance(value, bool):
        return "=" + ("true" if value else "false")
    if isinstance(value, str | int | float):
        return "=" + str(value)
    raise BadRecord("index", f"eq index value {value!r} is not a scalar")


def _instant_score(value: Any) -> float:
    """A date or timestamp as readside writes them (ISO 8601), scored by its
    seconds since the epoch (a date: its midnight, UTC), so a range index
    orders and bounds instants; else BadRecord."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRecord(
            "index", f"range index value {value!r} is not a number or an instant"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def to_json(doc: Mapping[str, Any]) -> bytes:
    """A document's value: its JSON text in UTF-8 (bytes, which redis-py
    sends as they are; it encodes each ``str`` argument in Python)."""
    try:
        return document_json_bytes(doc)
    except (TypeError, ValueError) as exc:
        raise BadRecord("encode", f"document is not JSON serializable: {exc}") from exc


def text_or_none(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def is_number(value: Scalar) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def score_bounds(cond: Condition) -> tuple[str, str]:
    """ZRANGEBYSCORE min/max arguments for a condition on a range index."""
    if isinstance(cond, Eq):
        return repr(float(cond.value)), repr(float(cond.value))
    low, low_open, high, high_open = float("-inf"), False, float("inf"), False
    for op, bound in cond.bounds:
        value = instant(bound).timestamp() if isinstance(bound, str) else bound
        if op in ("gt", "gte") and (value > low or (value == low and op == "gt")):
            low, low_open = value, op == "gt"
        if op in ("lt", "lte") and (value < high or (value == high and op == "lt")):
            high, high_open = value, op == "lt"

    def text(v: float, open_: bool) -> str:
        if v in (float("inf"), float("-inf")):
            return "+inf" if v > 0 else "-inf"
        return ("(" if open_ else "") + repr(v)

    return text(low, low_open), text(high, high_open)
