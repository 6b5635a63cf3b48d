"""``readside focus apply NAME``: make a focus's stores hold its new slice.

Order of operations after a focus's ``where`` changed: edit the config,
restart the workers with it (from then on every change is written by the new
definition), then apply. Applying does the rest, for the rows that did not
change meanwhile:

* Aggregate base view: a backfill, then a purge.

  - Backfill: a chunked snapshot load (:class:`~pipeline.snapshot.Loader`)
    of the derived view with the extra condition ``(<previous>) IS NOT
    TRUE``, where ``<previous>`` is the definition the last apply recorded,
    as the config writes it (the focus's ``where`` or one of its
    ``previous``): the recorded text is only compared with those, never run,
    since whoever can write the snapshot topic must not choose the SQL that
    runs. No record, or one the config does not hold, means a full load.
    ``IS NOT TRUE`` rather than ``NOT``, so that rows on which the previous
    predicate was NULL count as new.
  - Purge: per sink, the ids held minus the ids the view's SQL defines now
    are re-read in one fresh snapshot (as ``verify --repair`` does): roots
    outside the view become deletes at that snapshot's version, which is
    newer than anything stored, so the guard applies them; a root that
    re-entered meanwhile is written back instead.

* Table base view: an incremental-snapshot signal for the whole table.
  Table-view versions are stream offsets and every sink refuses an equal
  version, so neither a topic replay (its upserts carry the versions of the
  tombstones the old filter wrote) nor a delete at the stored version would
  be applied. Debezium re-emits every row as a new event instead: the
  workers (already on the new filter) upsert the rows it includes and write
  deletes for the ones it excludes, at new versions. This is asynchronous;
  follow it with ``readside status``.

Progress shows on the snapshot progress bar and, through the snapshot topic,
in ``readside status``; the applied definition is recorded there last (key
``focus:NAME``), so an apply that was stopped is simply run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial

from pipeline import definitions
from pipeline.aggregate import prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.focusconfig import derived_filter
from pipeline.sinkwriter import Backoff, open_sinks, until_reachable
from pipeline.snapshot.load import Loader, Options, send_signal
from pipeline.snapshot.state import SnapshotLog, SnapshotState, focus_key
from pipeline.viewconfig import AggregateViewConfig
from pipeline.views import build_views
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

Progress = Callable[[SnapshotState], None]


@dataclass
class Applied:
    """What one ``focus apply`` did."""

    focus: str
    view: str
    where: str
    previous: str | None
    state: str  # applied | stopped | signalled
    backfilled: int = 0
    purged: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        prev = "none (full load)" if self.previous is None else self.previous
        purged = ", ".join(f"{s}={n}" for s, n in sorted(self.purged.items()))
        return (
            f"focus {self.focus} ({self.view}) {self.state}: where {self.where}\n"
            f"  previous: {prev}\n"
            f"  backfilled: {self.backfilled} documents; purged: {purged or '-'}"
        )


class FocusApply:
    """One ``readside focus apply``; ``stop()`` ends it after a chunk."""

    def __init__(
        self, cfg: Config, name: str, progress: Progress, chunk_size: int = 1000
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.view_name = cfg.focus_view(name)
        self.vcfg = cfg.effective_views()[self.view_name]
        self.progress = progress
        self.chunk_size = chunk_size
        self.loader: Loader | None = None
        self.stopping = False

    def stop(self, *_args: object) -> None:
        self.stopping = True
        if self.loader is not None:
            self.loader.stop()

    def definition(self) -> str:
        vcfg = self.vcfg
        where = vcfg.where if isinstance(vcfg, AggregateViewConfig) else vcfg.filter
        assert where is not None  # a derived view always has the focus's filter
        return where

    def trusted(self, recorded: str | None) -> str | None:
        """The definition the config writes that equals ``recorded`` (the one
        the last apply recorded), or None: then the backfill loads the whole
        slice. What runs is always the config's text."""
        if recorded is None:
            return None
        focus = self.cfg.focuses[self.name]
        base = self.cfg.views[focus.view]
        for where in (focus.where, *focus.previous):
            text = derived_filter(base, where)
            if text == recorded:
                return text
        logger.warning(
            "focus %s: the definition last applied is neither its where nor one "
            "of its previous (add it to focuses.%s.previous to backfill only "
            "what the new where adds); loading the whole slice",
            self.name,
            self.name,
        )
        return None

    def run(self) -> Applied:
        log = SnapshotLog(self.cfg)
        try:
            last = until_reachable(
                partial(log.focus, self.name),
                "reading the snapshot log",
                Backoff.of(self.cfg.worker),
                lambda: self.stopping,
            )
            recorded = last.where if last and last.view == self.view_name else None
            previous = self.trusted(recorded)
            done = Applied(self.name, self.view_name, self.definition(), previous, "")
            if isinstance(self.vcfg, AggregateViewConfig):
                self._aggregate(done, log)
            else:
                send_signal(self.cfg, self.vcfg.table, None)
                done.state = "signalled"
            if done.state != "stopped":
                # the stores hold the slice the config defines (a table
                # view's: once the signalled rows came through the stream)
                sinks = sorted(self.vcfg.sinks)
                definitions.record(self.cfg, self.view_name, sinks)
                record = SnapshotState(
                    self.view_name,
                    sorted(self.vcfg.sinks),
                    done.where,
                    "focus",
                    done.state,
                    rows=done.backfilled + sum(done.purged.values()),
                )
                log.save(record, focus_key(self.name))
                self.progress(record)
            return done
        finally:
            log.close()

    # ------------------------------------------------------------ aggregate
    def _aggregate(self, done: Applied, log: SnapshotLog) -> None:
        extra = None if done.previous is None else f"({done.previous}) IS NOT TRUE"
        opts = Options(self.view_name, extra, chunk_size=self.chunk_size)
        self.loader = Loader(self.cfg, opts, self.progress)
        st = self.loader.run()
        done.backfilled = st.rows
        if st.state != "done" or self.stopping:
            done.state = "stopped"
            return
        done.purged = self._purge(log)
        done.state = "stopped" if self.stopping else "applied"

    def _purge(self, log: SnapshotLog) -> dict[str, int]:
        """Delete, in every sink, the documents the view no longer defines."""
        dsn = (self.cfg.source.lookup_dsn or self.cfg.source.dsn).get_secret_value()
        view = build_views(self.cfg, only=[self.view_name])[self.view_name]
        source = view.from_source()
        assert source is not None  # an aggregate base view (see run)
        prepare_views({view.name: view}, dsn, strict=False)
        sinks = build_sinks(self.cfg, sorted(view.cfg.sinks))
        st = SnapshotState(self.view_name, sorted(sinks), None, "purge")
        purged: dict[str, int] = {}
        with closing(Reader(dsn)) as reader:
            expected = source.ids(reader)
            try:
                open_sinks(
                    sinks,
                    Backoff.of(self.cfg.worker),
                    lambda: self.stopping,
                )
                gone = {n: s.ids(view.name) - expected for n, s in sinks.items()}
                st.total = sum(len(ids) for ids in gone.values())
                log.save(st)
                self.progress(st)
                for name, ids in gone.items():
                    if self.stopping:
                        break
                    result = sinks[name].write(source.reread_ids(reader, ids))
                    purged[name] = result.applied
                    st.rows += len(ids)
                    st.chunks += 1
                    log.save(st)
                    self.progress(st)
                    logger.info(
                        "focus purge view=%s sink=%s ids=%d applied=%d stale=%d",
                        view.name,
                        name,
                        len(ids),
                        result.applied,
                        result.stale,
                    )
            finally:
                for sink in sinks.values():
                    sink.close()
        st.state = "running" if self.stopping else "done"
        log.save(st)
        self.progress(st)
        return purged
