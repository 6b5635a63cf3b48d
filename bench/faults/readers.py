"""Readers that sample every store while the faults happen, and what they saw.

One thread per sink (so that one store's observations of an id are in real
time order) reads random ids of every view through the sink's own ``fetch``
(the live generation, as sites read it). An observation is ``(time, sink,
view, id, version, deleted)``; ``deleted`` is a tombstone, or the id absent
after it was seen live. The history keeps each id's transitions (a change of
version or of deleted), and two anomalies are flagged as they are seen:

* ``version_backwards``: a version lower than the one seen before;
* ``resurrected``: a live document after its delete was seen. Ids are never
  reused by the workload, so a document that comes back is always a fault.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.faults.source import VIEW_TABLE
from bench.faults.workload import Workload
from pipeline.config import Config
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

SAMPLE = 60  # ids per view per round


@dataclass
class Seen:
    version: int | None = None
    live: bool = False
    deleted: bool = False
    deleted_at: float = 0.0
    deleted_how: str = ""


@dataclass
class History:
    """What the readers saw: transitions, anomalies and counts."""

    transitions: list[tuple[float, str, str, str, int | None, bool]] = field(
        default_factory=list
    )
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    observations: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Readers:
    """The reader threads of one run."""

    def __init__(self, cfg: Config, workload: Workload, seed: int) -> None:
        self.cfg = cfg
        self.workload = workload
        self.seed = seed
        self.history = History()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        sinks = sorted({s for v in self.cfg.views.values() for s in v.sinks})
        for name in sinks:
            t = threading.Thread(target=self._run, args=(name,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, sink_name: str) -> None:
        rng = random.Random(f"{self.seed}-reader-{sink_name}")
        sink = None
        state: dict[tuple[str, str], Seen] = {}
        views = sorted(v for v, c in self.cfg.views.items() if sink_name in c.sinks)
        while not self._stop.is_set():
            try:
                if sink is None:
                    sink = build_sinks(self.cfg, [sink_name])[sink_name]
                    sink.open()
                for view in views:
                    with self.workload.lock:
                        pool = list(self.workload.ever[VIEW_TABLE[view]])
                    ids = [str(i) for i in rng.sample(pool, min(SAMPLE, len(pool)))]
                    if not ids:
                        continue
                    got = sink.fetch(view, ids)
                    now = time.time()
                    for ident in ids:
                        stored = got.get(ident)
                        if stored is None:
                            self._see(state, sink_name, view, ident, now, None, None)
                        else:
                            live = stored.doc is not None
                            self._see(
                                state, sink_name, view, ident, now, stored.version, live
                            )
            except Exception as exc:  # noqa: BLE001 - a store may be down on purpose
                with self.lock:
                    key = f"{sink_name}:{exc.__class__.__name__}"
                    self.history.errors[key] = self.history.errors.get(key, 0) + 1
                if sink is not None:
                    try:
                        sink.close()
                    except Exception:  # noqa: BLE001 - reopened below
                        pass
                sink = None
                time.sleep(0.5)
                continue
            time.sleep(0.2)
        if sink is not None:
            sink.close()

    def _see(
        self,
        state: dict[tuple[str, str], Seen],
        sink: str,
        view: str,
        ident: str,
        now: float,
        version: int | None,
        live: bool | None,
    ) -> None:
        s = state.setdefault((view, ident), Seen())
        anomalies: list[dict[str, Any]] = []
        base = {"t": now, "sink": sink, "view": view, "id": ident}
        if version is None:  # the store does not know the id
            if s.live and not s.deleted:
                s.deleted, s.deleted_at, s.deleted_how = True, now, "absent"
                self._transition(now, sink, view, ident, None, True)
            return
        if s.version is not None and version < s.version:
            anomalies.append(
                {
                    **base,
                    "kind": "version_backwards",
                    "before": s.version,
                    "now": version,
                }
            )
        if live and s.deleted:
            anomalies.append(
                {
                    **base,
                    "kind": "resurrected",
                    "deleted_seen": s.deleted_how,
                    "deleted_at": s.deleted_at,
                    "version": version,
                }
            )
            s.deleted = False
        if not live and not s.deleted:
            s.deleted, s.deleted_at, s.deleted_how = True, now, f"tombstone v{version}"
        changed = version != s.version or bool(live) != s.live
        s.version, s.live = version, bool(live)
        with self.lock:
            self.history.observations += 1
            self.history.anomalies.extend(anomalies)
        if changed:
            self._transition(now, sink, view, ident, version, not live)

    def _transition(
        self,
        now: float,
        sink: str,
        view: str,
        ident: str,
        version: int | None,
        deleted: bool,
    ) -> None:
        with self.lock:
            self.history.transitions.append((now, sink, view, ident, version, deleted))
