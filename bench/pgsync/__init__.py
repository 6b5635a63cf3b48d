"""``python -m bench pgsync``: readside beside pgsync on the same aggregate view.

`pgsync <https://pypi.org/project/pgsync/>`_ is a peer tool that syncs
PostgreSQL into Elasticsearch as nested documents. One run, on the local
stack, with the throwaway database of ``python -m bench snapshot``
(:class:`bench.snapshot_setup.BenchSource`: ``--roots`` customers, 5 orders
each, one order line per order with its product):

1. readside: ``readside snapshot customers --sink elasticsearch`` in its own
   process (:mod:`bench.snapshot_run`, as ``bench snapshot`` runs it), timed
   from ``Loader.run()`` to its return: roots/s.
2. pgsync: ``bootstrap`` (triggers, a view, a replication slot; not timed),
   then its initial sync ``pgsync --config schema.json`` (no daemon) of the
   same nested document into an index of its own on the same Elasticsearch:
   roots/s, timed by pgsync's own clock (its ``Timer``, printed at exit:
   connecting, validating, creating the index and the sync itself) and by
   the wall clock of its process.
3. documents: ``--sample`` roots are loaded again by readside (untimed, the
   timed run drops its index) and read back from both indices; every
   difference is counted by field and kind (number or time formatting,
   array order, a field only one tool writes). pgsync's index must hold
   every root.
4. streaming (``--parts ...,streaming``): pgsync as a daemon (``-d``) and a
   readside worker (Debezium connector, in-process :class:`Worker` into
   Elasticsearch) both run while ``--changes`` single-row UPDATEs of
   ``order_lines`` (one per root) commit from a writer thread; both indices
   are refreshed and counted every ~0.1 s meanwhile: the time until each
   shows all of them, and each change's commit-to-visible time.

pgsync runs from a virtualenv of its own (``--venv``, installed on first
use): it pins client libraries (elasticsearch-py 7, psycopg2, SQLAlchemy)
that the main environment must not get. Its environment is set per run
(``PG_*``, ``ELASTICSEARCH_URL``, ``REDIS_URL`` with a database number of its
own, ``CHECKPOINT_PATH`` in the run's work directory). Its search client is
elasticsearch-py unless the server has no ``GET /`` (see
:func:`choose_client`). At the end, even on failure: ``bootstrap
--teardown``, then its replication slots, its index, its Redis keys and the
database are removed (:meth:`BenchSource.close`).

The report goes to stdout (Markdown) and ``bench/results/pgsync.json``.

The parts: pgsync's virtualenv (:mod:`bench.pgsync.install`), the pgsync
runner (:mod:`bench.pgsync.tool`), the readside runner
(:mod:`bench.pgsync.readside`), the comparison of documents
(:mod:`bench.pgsync.documents`), the streaming run
(:mod:`bench.pgsync.streaming`) and the report (:mod:`bench.pgsync.summary`);
this module sets a run up and runs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import elasticsearch
import psycopg

from bench import report
from bench.pgsync.documents import compare_documents
from bench.pgsync.install import (
    DEFAULT_VENV,
    PGSYNC_VERSION,
    ensure_pgsync,
    venv_packages,
)
from bench.pgsync.readside import bench_readside
from bench.pgsync.streaming import bench_streaming
from bench.pgsync.summary import markdown
from bench.pgsync.tool import PgSync, bench_pgsync, choose_client, es_url, schema_json
from bench.scenario import add_admin_dsn, admin_dsn
from bench.snapshot_setup import BenchSource
from pipeline import config as config_mod

logger = logging.getLogger(__name__)

QUICK = {"roots": 300, "sample": 300, "changes": 50}


def server_versions(es: elasticsearch.Elasticsearch, dsn: str) -> dict[str, str]:
    """The servers both tools talk to (``GET /`` may be missing: ``_nodes``)."""
    out = {}
    try:
        nodes = es.nodes.info(node_id="_local")["nodes"]
        out["elasticsearch-server"] = str(next(iter(nodes.values()))["version"])
    except Exception as exc:  # noqa: BLE001 - versions are informative only
        logger.warning("no elasticsearch version: %s", exc)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        out["postgresql"] = str(row[0]).split()[0] if row else "?"
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench pgsync", description=__doc__)
    p.add_argument("--roots", type=int, default=100_000, help="aggregate roots")
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument("--writers", type=int, default=2, help="readside's chunk writers")
    p.add_argument("--sample", type=int, default=1000, help="roots compared")
    p.add_argument("--changes", type=int, default=2000, help="streamed updates")
    p.add_argument("--parts", default="initial,documents,streaming")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--config", default=None, help="readside config of the stack")
    add_admin_dsn(p)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--pgsync-version", default=PGSYNC_VERSION)
    p.add_argument(
        "--pgsync-client",
        choices=("auto", "elasticsearch", "opensearch"),
        default="auto",
        help="pgsync's search client (auto: opensearch-py when GET / fails)",
    )
    p.add_argument(
        "--redis-db", type=int, default=9, help="Redis database of pgsync's queue"
    )
    p.add_argument("--run-timeout", type=float, default=1800.0)
    p.add_argument("--out", default="bench/results/pgsync.json")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    report.setup_logging()
    bin_dir = ensure_pgsync(args.venv, args.pgsync_version)
    base = config_mod.load(args.config)
    args.admin_dsn = admin_dsn(base, args.admin_dsn)
    client, why = choose_client(es_url(base), args.pgsync_client)
    es = elasticsearch.Elasticsearch(es_url(base), request_timeout=120)
    results: dict[str, Any] = {
        "machine": report.machine(base),
        "pgsync_packages": venv_packages(bin_dir),
        "servers": server_versions(es, args.admin_dsn),
        "roots": args.roots,
        "chunk_size": args.chunk_size,
        "writers": args.writers,
        "quick": args.quick,
        "parts": args.parts,
        "pgsync_client": client,
        "pgsync_client_why": why,
    }
    workdir = Path(tempfile.mkdtemp(prefix="readside-bench-pgsync-"))
    src = BenchSource(base, args.admin_dsn, workdir)
    pgs = PgSync(bin_dir, src, base, workdir, args.redis_db, client)
    results |= {
        "prefix": src.prefix,
        "workdir": str(workdir),  # configs, pgsync's schema and logs
        "pgsync_index": pgs.index,
        "pgsync_schema": schema_json(src.db, pgs.index),
    }
    try:
        logger.info("filling tables prefix=%s roots=%d", src.prefix, args.roots)
        results["fill_s"] = src.fill(0, 0, args.roots)
        results["readside"] = bench_readside(src, args)
        results["pgsync"] = bench_pgsync(pgs, es, args)
        results["ratio"] = (
            results["readside"]["roots_per_s"] / results["pgsync"]["roots_per_s"]
        )
        results["ratio_wall"] = (
            results["readside"]["rows"] / results["readside"]["wall_s"]
        ) / results["pgsync"]["roots_per_s_wall"]
        if "documents" in args.parts:
            results["documents"] = compare_documents(src, pgs, es, args)
        if "streaming" in args.parts:
            results["streaming"] = bench_streaming(src, pgs, es, args)
    finally:
        pgs.cleanup()
        src.close()
        es.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    return 0
