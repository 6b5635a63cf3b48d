"""The readside side of the comparison: its snapshot run and its index.

:func:`bench_readside` runs ``readside snapshot customers --sink
elasticsearch`` in its own process, as ``python -m bench snapshot`` does
(:func:`bench.snapshot.run_snapshot`), timed from ``Loader.run()`` to its
return; :func:`load_readside_sample` loads sample roots again in process (the
timed run drops its index) for the comparison of documents.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from typing import Any

from bench.snapshot import run_snapshot
from bench.snapshot_setup import AGG_VIEW, BenchSource
from connectors.elasticsearch.sink import ElasticsearchSink
from pipeline.config import Config
from pipeline.snapshot import Loader, Options
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)


def readside_alias(cfg: Config) -> str:
    """The alias of readside's index of the view ``customers``."""
    sink = build_sinks(cfg, ["elasticsearch"])["elasticsearch"]
    assert isinstance(sink, ElasticsearchSink)
    return sink.alias(AGG_VIEW)


def bench_readside(src: BenchSource, args: argparse.Namespace) -> dict[str, Any]:
    """``readside snapshot customers --sink elasticsearch``, as bench snapshot."""
    src.aggregate_config()
    logger.info("readside snapshot view=%s sink=elasticsearch", AGG_VIEW)
    start = time.perf_counter()
    row = run_snapshot(
        src.workdir / "aggregate.yaml",
        {
            "view": AGG_VIEW,
            "sinks": ["elasticsearch"],
            "chunk_size": args.chunk_size,
            "writers": args.writers,
            "count_held": True,
        },
        args.run_timeout,
    )
    row["wall_s"] = time.perf_counter() - start
    if "error" in row:
        raise RuntimeError(f"readside snapshot failed: {row['error']}")
    row["roots_per_s"] = row["rows"] / row["elapsed_s"]
    return dict(row)


def load_readside_sample(cfg: Config, ids: Sequence[int], chunk_size: int) -> None:
    """The sample roots into readside's index again (untimed, in process)."""
    where = f"id IN ({', '.join(str(i) for i in ids)})"
    opts = Options(AGG_VIEW, where, ["elasticsearch"], chunk_size, restart=True)
    st = Loader(cfg, opts, lambda _st: None).run()
    if st.state != "done":
        raise RuntimeError(f"readside sample load ended in state {st.state}")
