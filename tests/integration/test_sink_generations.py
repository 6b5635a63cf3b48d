"""Generations (rebuilds) of the real sinks: fill beside, switch, drop.

A rebuild fills generation n+1 of a view through a *pinned* sink (built with
``generation_target``) while live sinks keep serving generation n; one
``switch_generation`` moves every live reader and writer at once, including
sinks opened before the switch, and the old generation is then dropped
(:class:`connectors.base.Generations`). Needs the local stack, like
``test_sink_conformance``; every test works on its own uniquely named target
and removes every generation of it afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from test_sink_conformance import KINDS, MEMORY_STORE, VIEW, AnySink, _config

from connectors import memory
from connectors.base import Generations, LoadMarks, Stored, ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.memory import MemorySink
from connectors.mongodb.sink import MongoSink
from connectors.mongodb.store import GENERATIONS, generation_name
from connectors.redis.keys import generation_prefix
from connectors.redis.sink import RedisSink
from connectors.registry import build_sink
from pipeline.errors import FatalError
from pipeline.events import Delete, Upsert

pytestmark = pytest.mark.integration

IDS = ["a", "b", "c", "d"]
A1 = {"name": "a", "body": "gen 1"}
B1 = {"name": "b", "body": "gen 1"}
B2 = {"name": "b", "body": "rebuilt"}
C2 = {"name": "c", "body": "rebuilt"}
D2 = {"name": "d", "body": "written after the switch"}


@dataclass
class Rig:
    """Sinks of one kind on one fresh view target, all closed and purged after."""

    kind: str
    base: ViewTarget
    made: list[AnySink] = field(default_factory=list)

    def sink(self, target: ViewTarget | None = None) -> AnySink:
        """An opened sink of the view: live, or pinned when given a target."""
        sink = build_sink(
            f"{self.kind}-gen-test", _config(self.kind), {VIEW: target or self.base}
        )
        assert isinstance(sink, RedisSink | ElasticsearchSink | MongoSink | MemorySink)
        self.made.append(sink)
        sink.open()
        return sink

    def pinned(self, live: AnySink, gen: int) -> AnySink:
        """An opened sink writing and reading generation ``gen`` directly."""
        target = live.generation_target(VIEW, gen)
        assert target.view == VIEW
        assert target.name == self.generation_name(gen)
        assert target.options == self.base.options
        return self.sink(target)

    def generation_name(self, gen: int) -> str:
        """Target name of generation ``gen`` as each store documents it."""
        base = self.base.name
        if self.kind in ("elasticsearch", "opensearch"):
            return f"{base}-{gen:06d}"
        return f"{base}~{gen}" if gen > 1 else base

    def storage_exists(self, sink: AnySink, gen: int) -> bool:
        """Whether the store holds anything of generation ``gen``."""
        base = self.base.name
        if isinstance(sink, RedisSink):
            prefix = generation_prefix(base, gen)
            return any(
                True
                for suffix in (":*", "#*")
                for _key in sink.client.scan_iter(match=prefix + suffix)
            )
        if isinstance(sink, ElasticsearchSink):
            index = f"{sink.alias(VIEW)}-{gen:06d}"
            return bool(sink.client.indices.exists(index=index))
        if isinstance(sink, MemorySink):
            where = memory.generation_name(base, gen)
            return any(t == where for t, _id in list(sink.data))
        return generation_name(base, gen) in sink.db.list_collection_names()

    def pointer(self, sink: AnySink) -> object:
        """The store's own record of the live generation (``None``: none)."""
        base = self.base.name
        if isinstance(sink, RedisSink):
            return sink.client.get(f"{base}@gen")
        if isinstance(sink, ElasticsearchSink):
            alias = sink.alias(VIEW)
            return sorted(sink.client.indices.get_alias(name=alias).body)
        if isinstance(sink, MemorySink):
            return memory.shared_store(MEMORY_STORE).generations[base][0]
        raw = sink.db[GENERATIONS].find_one({"_id": base})
        return None if raw is None else raw["gen"]

    def expected_pointer(self, sink: AnySink, gen: int) -> object:
        if isinstance(sink, RedisSink):
            return str(gen)
        if isinstance(sink, ElasticsearchSink):
            return [f"{sink.alias(VIEW)}-{gen:06d}"]
        return gen

    def purge(self) -> None:
        """Remove every generation and the live-generation record of the view."""
        admin = build_sink(f"{self.kind}-gen-purge", _config(self.kind), {})
        base = self.base.name
        try:
            if isinstance(admin, RedisSink):
                # base is "gen-<hex>": its own keys, every generation, "@gen"
                keys = [str(k) for k in admin.client.scan_iter(match=f"{base}*")]
                if keys:
                    admin.client.unlink(*keys)
            elif isinstance(admin, MemorySink):
                store = memory.shared_store(MEMORY_STORE)
                with store.lock:
                    for key in [k for k in store.data if k[0].startswith(base)]:
                        del store.data[key]
                    store.generations.pop(base, None)
            elif isinstance(admin, ElasticsearchSink):
                pattern = f"{admin.cfg.index_prefix}{base}*"
                for index in admin.client.indices.get(index=pattern).body:
                    admin.client.indices.delete(index=index, ignore_unavailable=True)
            else:
                assert isinstance(admin, MongoSink)
                for name in admin.db.list_collection_names():
                    if name == base or name.startswith(f"{base}~"):
                        admin.db.drop_collection(name)
                admin.db[GENERATIONS].delete_one({"_id": base})
        finally:
            admin.close()


@pytest.fixture(params=KINDS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    kind = str(request.param)
    rig = Rig(kind, ViewTarget(VIEW, f"gen-{uuid.uuid4().hex[:12]}"))
    try:
        yield rig
    finally:
        for sink in rig.made:
            sink.close()
        rig.purge()


def _up(doc_id: str, version: int, doc: dict[str, str]) -> Upsert:
    return Upsert(VIEW, doc_id, version, dict(doc))


def _stale_cache(sink: AnySink, gen: int = 1) -> None:
    """A Redis sink opened before a switch must still believe in the old
    generation ``gen``, or the test would not exercise the moved-generation
    retry."""
    if isinstance(sink, RedisSink):
        assert sink._live[VIEW] == gen


def _rebuild_to_two(rig: Rig) -> tuple[AnySink, AnySink, list[AnySink]]:
    """Fill gen 1 (a, b), rebuild gen 2 (b new, c) beside it, switch.

    Returns the live sink that switched, the pinned gen-2 sink, and three more
    live sinks opened before the switch (so Redis ones cache generation 1).
    """
    live = rig.sink()
    assert isinstance(live, Generations)
    assert live.write([_up("a", 10, A1), _up("b", 10, B1)]).applied == 2
    assert live.generation(VIEW) == 1
    live.create_generation(VIEW, 2)
    assert live.generation(VIEW) == 1
    pinned = rig.pinned(live, 2)
    assert pinned.ids(VIEW) == set()
    assert pinned.write([_up("b", 20, B2), _up("c", 20, C2)]).applied == 2
    early = [rig.sink() for _ in range(3)]
    gen1 = {"a": Stored(10, A1), "b": Stored(10, B1)}
    for sink in (live, *early):
        assert sink.fetch(VIEW, IDS) == gen1
        assert sink.ids(VIEW) == {"a", "b"}
    assert pinned.fetch(VIEW, IDS) == {"b": Stored(20, B2), "c": Stored(20, C2)}
    live.switch_generation(VIEW, 2)
    assert live.generation(VIEW) == 2
    assert rig.pointer(live) == rig.expected_pointer(live, 2)
    return live, pinned, early


def test_switch_moves_live_readers_and_writers_to_the_rebuilt_generation(
    rig: Rig,
) -> None:
    live, pinned, (writer, reader, _spare) = _rebuild_to_two(rig)
    gen2 = {"b": Stored(20, B2), "c": Stored(20, C2)}

    # Sinks opened before the switch: a write lands in gen 2, reads see gen 2.
    _stale_cache(writer, 1)
    assert writer.write([_up("d", 20, D2)]).applied == 1
    gen2["d"] = Stored(20, D2)
    assert pinned.fetch(VIEW, IDS) == gen2
    _stale_cache(reader, 1)
    assert reader.fetch(VIEW, IDS) == gen2
    for sink in (live, writer, reader):
        assert sink.fetch(VIEW, IDS) == gen2
        assert sink.ids(VIEW) == {"b", "c", "d"}
        assert sink.generation(VIEW) == 2
    assert pinned.ids(VIEW) == {"b", "c", "d"}

    # Dropping gen 1 removes its storage only.
    assert rig.storage_exists(live, 1)
    live.drop_generation(VIEW, 1)
    assert not rig.storage_exists(live, 1)
    assert rig.storage_exists(live, 2)
    assert rig.pointer(live) == rig.expected_pointer(live, 2)
    assert live.generation(VIEW) == 2
    assert live.fetch(VIEW, IDS) == gen2
    assert live.ids(VIEW) == {"b", "c", "d"}

    # The live generation can be neither dropped nor re-created (emptied).
    with pytest.raises(FatalError):
        live.drop_generation(VIEW, 2)
    with pytest.raises(FatalError):
        live.create_generation(VIEW, 2)
    assert live.generation(VIEW) == 2
    assert live.fetch(VIEW, IDS) == gen2
    assert rig.storage_exists(live, 2)


def test_version_guard_holds_in_the_new_generation_after_a_switch(rig: Rig) -> None:
    live, pinned, (stale_cached, _reader, _spare) = _rebuild_to_two(rig)
    gen2 = {"b": Stored(20, B2), "c": Stored(20, C2)}

    # Through a sink that last saw gen 1 (Redis: the moved-generation retry),
    # older versions than gen 2 holds are stale, deletes included.
    _stale_cache(stale_cached, 1)
    result = stale_cached.write(
        [_up("b", 15, {"name": "b", "body": "late"}), Delete(VIEW, "c", 15)]
    )
    assert (result.applied, result.stale, result.rejected) == (0, 2, [])
    # Through the sink that switched, and at equal versions.
    result = live.write([_up("b", 19, {"name": "b", "body": "late"})])
    assert (result.applied, result.stale, result.rejected) == (0, 1, [])
    result = live.write([_up("b", 20, B2), Delete(VIEW, "c", 20)])
    assert (result.applied, result.stale, result.rejected) == (0, 2, [])
    assert pinned.fetch(VIEW, IDS) == gen2
    assert live.fetch(VIEW, IDS) == gen2
    assert live.ids(VIEW) == {"b", "c"}

    # A newer version still applies, in gen 2.
    result = stale_cached.write([Delete(VIEW, "c", 30)])
    assert (result.applied, result.stale, result.rejected) == (1, 0, [])
    assert pinned.fetch(VIEW, ["c"]) == {"c": Stored(30, None)}
    assert live.ids(VIEW) == {"b"}


def test_second_rebuild_from_two_to_three(rig: Rig) -> None:
    live, pinned2, early = _rebuild_to_two(rig)
    live.drop_generation(VIEW, 1)
    gen2 = {"b": Stored(20, B2), "c": Stored(20, C2)}

    live.create_generation(VIEW, 3)
    pinned3 = rig.pinned(live, 3)
    # Leftovers of an aborted rebuild are removed by create_generation.
    assert pinned3.write([_up("x", 5, {"name": "x"})]).applied == 1
    assert pinned3.ids(VIEW) == {"x"}
    live.create_generation(VIEW, 3)
    assert pinned3.ids(VIEW) == set()
    assert pinned3.fetch(VIEW, ["x"]) == {}

    b3 = {"name": "b", "body": "rebuilt again"}
    e3 = {"name": "e", "body": "rebuilt again"}
    assert pinned3.write([_up("b", 40, b3), _up("e", 40, e3)]).applied == 2
    later = rig.sink()  # opened while gen 2 is live
    reader, other, writer = early  # writer: not used since gen 1 was live
    for sink in (live, reader, other, later):
        assert sink.fetch(VIEW, [*IDS, "e"]) == gen2
        assert sink.ids(VIEW) == {"b", "c"}

    live.switch_generation(VIEW, 3)
    assert live.generation(VIEW) == 3
    assert rig.pointer(live) == rig.expected_pointer(live, 3)
    gen3 = {"b": Stored(40, b3), "e": Stored(40, e3)}
    _stale_cache(writer, 1)  # two switches behind
    d3 = {"name": "d", "body": "after the second switch"}
    assert writer.write([_up("d", 40, d3)]).applied == 1
    gen3["d"] = Stored(40, d3)
    assert pinned3.fetch(VIEW, [*IDS, "e"]) == gen3
    assert pinned2.fetch(VIEW, [*IDS, "e"]) == gen2  # untouched
    _stale_cache(reader, 2)
    _stale_cache(later, 2)
    for sink in (reader, later, other, writer, live):
        assert sink.fetch(VIEW, [*IDS, "e"]) == gen3
        assert sink.ids(VIEW) == {"b", "d", "e"}
    result = later.write([_up("b", 39, {"name": "b", "body": "late"})])
    assert (result.applied, result.stale) == (0, 1)

    assert rig.storage_exists(live, 2)
    live.drop_generation(VIEW, 2)
    assert not rig.storage_exists(live, 2)
    assert not rig.storage_exists(live, 1)
    assert rig.storage_exists(live, 3)
    assert rig.pointer(live) == rig.expected_pointer(live, 3)
    assert live.fetch(VIEW, [*IDS, "e"]) == gen3
    with pytest.raises(FatalError):
        live.drop_generation(VIEW, 3)
    with pytest.raises(FatalError):
        live.create_generation(VIEW, 3)
    assert live.ids(VIEW) == {"b", "d", "e"}


#: sinks of one view opened and marked at once, as by workers started together
AT_ONCE = 4


def _open_and_mark_at_once(rig: Rig) -> list[BaseException]:
    """:data:`AT_ONCE` threads each open a sink of ``rig``'s view, then mark
    it loaded, each step begun together; what they raised."""
    start = threading.Barrier(AT_ONCE)
    errors: list[BaseException] = []

    def open_and_mark() -> None:
        try:
            start.wait(30)
            sink = rig.sink()
            assert isinstance(sink, LoadMarks)
            start.wait(30)
            sink.mark_loaded(VIEW)
        except BaseException as exc:  # reported by the test, in the store's words
            errors.append(exc)

    threads = [threading.Thread(target=open_and_mark) for _ in range(AT_ONCE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_sinks_opened_at_once_each_mark_the_view_loaded(rig: Rig) -> None:
    """Workers started together each open their sink of a new view and mark
    it loaded (pipeline.loaded: a first start) at the same moment. Each must
    succeed: a worker whose mark failed stopped watching it, so a store
    that lost the view later went unnoticed by it. On FerretDB two of them
    creating the view's collection at once got "Collection ... already
    exists" (code 48, after pymongo's own check said it was not there) and
    two upserting the pointer at once a duplicate key (code 11000)."""
    for _round in range(3):
        each = Rig(rig.kind, ViewTarget(VIEW, f"gen-{uuid.uuid4().hex[:12]}"))
        try:
            errors = _open_and_mark_at_once(each)
            assert not errors, [repr(e) for e in errors]
            assert len(each.made) == AT_ONCE
            for sink in each.made:
                assert isinstance(sink, LoadMarks)
                assert sink.loaded(VIEW)
        finally:
            for sink in each.made:
                sink.close()
            each.purge()
