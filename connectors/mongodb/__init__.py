"""The MongoDB store: one collection per view, version-guarded replaces.

The whole store is this package: its settings (:class:`MongoSinkConfig`,
here), its sink (:mod:`connectors.mongodb.sink`, the writes) built on the
client and collections (:mod:`~connectors.mongodb.store`), the generations
(:mod:`~connectors.mongodb.generations`) and the reads and filters of sites
(:mod:`~connectors.mongodb.reads`), and :data:`KIND`, the sink type
``mongodb`` (entry point ``readside.sinks``). The sink, and with it the
driver, is imported only when a sink is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import SinkKind
from pipeline.sinktypes import SinkConfig


class MongoWriteConcern(BaseModel):
    """MongoDB write concern; each field set here overrides the URI's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    w: int | str | None = None
    j: bool | None = None
    wtimeout_ms: int | None = Field(None, ge=0)


class MongoSinkConfig(SinkConfig):
    """A MongoDB database. Writes carry the write concern of the URI
    (``w``, ``journal``, ``wtimeoutMS``) with ``write_concern`` over it;
    neither set: the server's default."""

    type: Literal["mongodb"]
    uri: SecretStr = SecretStr("mongodb://127.0.0.1:27027/")
    database: str = "readside"
    timeout_s: float = Field(30.0, gt=0)
    write_concern: MongoWriteConcern | None = None

    def target_problem(self, target: str) -> str | None:
        if "$" in target or target.startswith("system."):
            return f"{target!r} is not a valid MongoDB collection name"
        return None


KIND: SinkKind[MongoSinkConfig] = SinkKind(
    "mongodb", MongoSinkConfig, "connectors.mongodb.sink:MongoSink"
)
