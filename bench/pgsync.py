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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import elasticsearch
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench import report
from bench.snapshot import run_snapshot
from bench.snapshot_setup import AGG_VIEW, ORDERS_PER_ROOT, BenchSource
from pipeline import config as config_mod
from pipeline import worker as worker_mod
from pipeline.config import Config
from pipeline.snapshot import Loader, Options
from pipeline.views import build_views
from pipeline.worker import build_sinks

logger = logging.getLogger("bench.pgsync")

PGSYNC_VERSION = "7.3.0"
DEFAULT_VENV = Path("/var/cache/readside/pgsync-venv")
QUICK = {"roots": 300, "sample": 300, "changes": 50}
#: Streamed UPDATEs set ``qty`` to ``MARK + k``; the seed data stays below it.
MARK = 100
#: pgsync's own clock, printed when its command ends: `` 0:00:12.3 (12.30 sec)``.
_TIMER = re.compile(r"\(([0-9.]+) sec\)")
#: What pgsync reads from the environment (``pgsync/settings.py``): a run's
#: environment drops every inherited one of these before setting its own.
_PGSYNC_ENV = ("PG_", "ELASTICSEARCH", "OPENSEARCH", "REDIS_", "SCHEMA", "S3_")

Doc = dict[str, Any]


# ---------------------------------------------------------------- install
def ensure_pgsync(venv: Path, version: str) -> Path:
    """The ``bin`` directory of a virtualenv holding pgsync ``version``.

    Created on first use with ``python -m venv`` and pip (PyPI): pgsync pins
    client libraries that must stay out of readside's own environment.
    """
    bin_dir = venv / "bin"
    if installed_version(bin_dir) == version:
        return bin_dir
    logger.info(
        "installing pgsync==%s into its own virtualenv %s (first use; pip, "
        "a minute or two)",
        version,
        venv,
    )
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"pgsync=={version}",
        ],
        check=True,
        timeout=1200,
    )
    found = installed_version(bin_dir)
    if found != version:
        raise RuntimeError(f"pgsync {version} not in {venv} after pip: {found}")
    logger.info("pgsync %s installed in %s", version, venv)
    return bin_dir


def installed_version(bin_dir: Path) -> str | None:
    if not (bin_dir / "pgsync").exists():
        return None
    done = subprocess.run(
        [str(bin_dir / "pgsync"), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tempfile.gettempdir(),  # pgsync reads a .env of its cwd
        env={**_clean_env(), "PG_USER": "unused"},
    )
    match = re.search(r"Version: (\S+)", done.stdout)
    return match.group(1) if match else None


def venv_packages(bin_dir: Path) -> dict[str, str]:
    """Versions of pgsync's own client libraries (for the report)."""
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) "
        "for p in ('pgsync', 'elasticsearch', 'opensearch-py', 'SQLAlchemy', "
        "'psycopg2-binary', 'redis')}))"
    )
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_PGSYNC_ENV)}


# ---------------------------------------------------------------- pgsync
def schema_json(database: str, index: str) -> list[dict[str, Any]]:
    """pgsync's schema of the document of readside's view ``customers``
    (:data:`bench.snapshot_setup.AGG_VIEW_CFG`): the same fields, labels and
    nesting. pgsync has no ``order_by`` for child arrays."""

    def one_to_many(parent: str, child: str) -> dict[str, Any]:
        return {
            "variant": "object",
            "type": "one_to_many",
            "foreign_key": {"parent": [parent], "child": [child]},
        }

    product = {
        "table": "products",
        "columns": ["name", "price"],
        "label": "product",
        "relationship": {
            "variant": "object",
            "type": "one_to_one",
            "foreign_key": {"parent": ["product_id"], "child": ["id"]},
        },
    }
    lines = {
        "table": "order_lines",
        "columns": ["id", "qty", "product_id"],
        "label": "lines",
        "relationship": one_to_many("id", "order_id"),
        "children": [product],
    }
    orders = {
        "table": "orders",
        "columns": ["id", "status", "placed", "total"],
        "label": "orders",
        "relationship": one_to_many("id", "customer_id"),
        "children": [lines],
    }
    root = {
        "table": "customers",
        "columns": ["id", "name", "tier", "email", "since"],
        "children": [orders],
    }
    return [{"database": database, "index": index, "nodes": root}]


class PgSync:
    """pgsync's commands, from its virtualenv, on one BenchSource database."""

    def __init__(
        self,
        bin_dir: Path,
        src: BenchSource,
        base: Config,
        workdir: Path,
        redis_db: int,
        client: str = "elasticsearch",
    ) -> None:
        self.bin_dir = bin_dir
        self.client = client
        self.src = src
        self.workdir = workdir
        self.index = f"{src.prefix}-pgsync-{AGG_VIEW}"
        # pgsync names its replication slot and Redis queue after
        # "<database>_<index>" without anything but [0-9a-zA-Z_].
        self.name = re.sub("[^0-9a-zA-Z_]+", "", f"{src.db.lower()}_{self.index}")
        self.schema = workdir / "pgsync-schema.json"
        self.schema.write_text(json.dumps(schema_json(src.db, self.index), indent=2))
        self.es_url = _es_url(base)
        self.redis_url = _redis_url(base, redis_db)
        pg = conninfo_to_dict(src.admin_dsn)
        self.env = {
            **_clean_env(),
            "PG_HOST": str(pg.get("host", "127.0.0.1")),
            "PG_PORT": str(pg.get("port", 5432)),
            "PG_USER": str(pg.get("user", "postgres")),
            "ELASTICSEARCH_URL": self.es_url,
            "REDIS_URL": self.redis_url,
            "CHECKPOINT_PATH": str(workdir),
            "CONSOLE_LOGGING_HANDLER_MIN_LEVEL": "WARNING",
        }
        if pg.get("password"):
            self.env["PG_PASSWORD"] = str(pg["password"])
        if client == "opensearch":  # pgsync's switch to its opensearch-py client
            self.env["OPENSEARCH"] = "true"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.bootstrapped = False

    def _cmd(self, tool: str, *args: str) -> list[str]:
        return [str(self.bin_dir / tool), "--config", str(self.schema), *args]

    def run(self, tool: str, *args: str, timeout_s: float) -> dict[str, Any]:
        """One pgsync command to its end: wall and own seconds, peak RSS."""
        log = self.workdir / f"{tool}{'-'.join(args)}.log"
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(
                self._cmd(tool, *args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
            killer = threading.Timer(timeout_s, proc.kill)
            killer.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        text = log.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {proc.returncode} after "
                f"{wall:.0f}s: {text.strip()[-1500:]}"
            )
        own = _TIMER.findall(text)
        return {
            "wall_s": wall,
            "own_s": float(own[-1]) if own else None,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        }

    def bootstrap(self, timeout_s: float) -> dict[str, Any]:
        self.bootstrapped = True
        return self.run("bootstrap", timeout_s=timeout_s)

    def start_daemon(self) -> None:
        with open(self.workdir / "pgsync-daemon.log", "wb") as log:
            self.daemon = subprocess.Popen(
                self._cmd("pgsync", "--daemon"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )

    def stop_daemon(self) -> None:
        proc, self.daemon = self.daemon, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)

    def daemon_log_tail(self) -> str:
        path = self.workdir / "pgsync-daemon.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def cleanup(self) -> None:
        """Everything pgsync made; a failing step does not stop the rest."""
        _attempt("pgsync daemon", self.stop_daemon)
        if self.bootstrapped:
            _attempt(
                "pgsync teardown",
                lambda: self.run("bootstrap", "--teardown", timeout_s=180),
            )
        _attempt("pgsync replication slots", self._drop_slots)
        _attempt("pgsync index", self._drop_index)
        _attempt("pgsync redis keys", self._drop_redis)

    def _drop_slots(self) -> None:
        # Its slot, and "_tmp_": the slot its validation creates and drops.
        with psycopg.connect(self.src.admin_dsn, autocommit=True) as conn:
            for _ in range(30):
                rows = conn.execute(
                    "SELECT slot_name, active_pid FROM pg_replication_slots "
                    "WHERE database = %s AND slot_name IN (%s, '_tmp_')",
                    (self.src.db, self.name),
                ).fetchall()
                if not rows:
                    return
                for slot, pid in rows:
                    if pid is not None:
                        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        continue
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                time.sleep(1)
        raise RuntimeError(f"replication slot {self.name} still in use")

    def _drop_index(self) -> None:
        es = elasticsearch.Elasticsearch(self.es_url)
        es.options(ignore_status=404).indices.delete(index=self.index)
        es.close()

    def _drop_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"queue:{self.name}*"))
        if keys:
            client.delete(*keys)
        client.close()


def choose_client(es_url: str, wanted: str) -> tuple[str, str | None]:
    """pgsync's search client for this Elasticsearch, and why if not its own.

    pgsync 7.3 pins elasticsearch-py 7.17, whose product check sends ``GET /``
    before any other request, and its ``SearchClient`` reads the version from
    ``GET /`` too. The stack's Elasticsearch (the integ-test distribution:
    modules apm, transport-netty4, x-pack-core, x-pack-security) has no
    ``rest-root`` module, so ``GET /`` answers 405 and every pgsync command
    fails. ``auto`` then takes pgsync's other client, opensearch-py
    (``OPENSEARCH=true``), which sends the same bulk and index requests
    without those two calls.
    """
    if wanted != "auto":
        return wanted, None
    es = elasticsearch.Elasticsearch(es_url)
    try:
        es.perform_request("GET", "/", headers={"accept": "application/json"})
        return "elasticsearch", None
    except elasticsearch.ApiError as exc:
        why = (
            f"GET / on {es_url} answers {exc.meta.status} ({exc.message}): "
            "elasticsearch-py 7.17 (pinned by pgsync) refuses a server whose "
            "GET / fails (product check), and pgsync's SearchClient calls it; "
            "pgsync runs with its opensearch-py client (OPENSEARCH=true) instead"
        )
        logger.warning("pgsync client: %s", why)
        return "opensearch", why
    finally:
        es.close()


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


def _es_url(base: Config) -> str:
    for s in base.sinks.values():
        if s.type == "elasticsearch":
            return str(s.hosts[0])
    raise RuntimeError("the stack's config has no elasticsearch sink")


def _redis_url(base: Config, db: int) -> str:
    for s in base.sinks.values():
        if s.type == "redis":
            parts = urlsplit(s.url.get_secret_value())
            return urlunsplit(parts._replace(path=f"/{db}"))
    raise RuntimeError("the stack's config has no redis sink")


def _attempt(what: str, step: Any) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - cleanup goes on
        logger.warning("cleanup failed what=%s error=%s", what, exc)


# ---------------------------------------------------------------- the runs
def readside_alias(cfg: Config) -> str:
    sink = build_sinks(cfg, ["elasticsearch"])["elasticsearch"]
    return str(sink.alias(AGG_VIEW))  # type: ignore[attr-defined]


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
            "count_held": True,
        },
        args.run_timeout,
    )
    row["wall_s"] = time.perf_counter() - start
    if "error" in row:
        raise RuntimeError(f"readside snapshot failed: {row['error']}")
    row["roots_per_s"] = row["rows"] / row["elapsed_s"]
    return dict(row)


def bench_pgsync(
    pgs: PgSync, es: elasticsearch.Elasticsearch, args: argparse.Namespace
) -> dict[str, Any]:
    logger.info("pgsync bootstrap database=%s", pgs.src.db)
    boot = pgs.bootstrap(args.run_timeout)
    logger.info("pgsync initial sync index=%s", pgs.index)
    row = pgs.run("pgsync", timeout_s=args.run_timeout)
    es.indices.refresh(index=pgs.index)
    held = int(es.count(index=pgs.index)["count"])
    ids = set(_ids(es, pgs.index))
    want = {str(i) for i in range(1, args.roots + 1)}
    seconds = row["own_s"] or row["wall_s"]
    return {
        **row,
        "bootstrap_s": boot["wall_s"],
        "roots": args.roots,
        "docs_held": held,
        "missing_roots": len(want - ids),
        "extra_docs": len(ids - want),
        "roots_per_s": args.roots / seconds,
        "roots_per_s_wall": args.roots / row["wall_s"],
    }


def _ids(es: elasticsearch.Elasticsearch, index: str) -> Iterator[str]:
    resp = es.search(index=index, scroll="2m", size=5000, source=False, sort=["_doc"])
    scroll = resp.get("_scroll_id")
    try:
        while resp["hits"]["hits"]:
            for hit in resp["hits"]["hits"]:
                yield str(hit["_id"])
            resp = es.scroll(scroll_id=scroll, scroll="2m")
            scroll = resp.get("_scroll_id")
    finally:
        if scroll:
            es.options(ignore_status=404).clear_scroll(scroll_id=scroll)


def load_readside_sample(cfg: Config, ids: Sequence[int], chunk_size: int) -> None:
    """The sample roots into readside's index again (untimed, in process)."""
    where = f"id IN ({', '.join(str(i) for i in ids)})"
    opts = Options(AGG_VIEW, where, ["elasticsearch"], chunk_size, restart=True)
    st = Loader(cfg, opts, lambda _st: None).run()
    if st.state != "done":
        raise RuntimeError(f"readside sample load ended in state {st.state}")


def _mget(es: elasticsearch.Elasticsearch, index: str, ids: Sequence[int]) -> Doc:
    out: Doc = {}
    for i in range(0, len(ids), 500):
        resp = es.mget(index=index, ids=[str(x) for x in ids[i : i + 500]])
        for d in resp["docs"]:
            if d.get("found"):
                out[str(d["_id"])] = d["_source"]
    return out


def compare_documents(
    src: BenchSource, pgs: PgSync, es: elasticsearch.Elasticsearch, args: Any
) -> dict[str, Any]:
    cfg = src.configs["aggregate"]
    rng = random.Random(11)
    ids = sorted(rng.sample(range(1, args.roots + 1), min(args.sample, args.roots)))
    logger.info("documents: loading %d sample roots into readside again", len(ids))
    load_readside_sample(cfg, ids, args.chunk_size)
    alias = readside_alias(cfg)
    ours, theirs = _mget(es, alias, ids), _mget(es, pgs.index, ids)
    diffs: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], tuple[Any, Any]] = {}
    identical = 0
    equal: set[str] = set()
    for key in (str(i) for i in ids):
        if key not in ours or key not in theirs:
            continue
        every = list(diff(ours[key], theirs[key]))
        equal.update(path for path, kind, _a, _b in every if kind == "same")
        found = [d for d in every if d[1] != "same"]
        identical += not found
        for path, kind, a, b in found:
            examples.setdefault((path, kind), (a, b))
        diffs.update({(path, kind) for path, kind, _a, _b in found})  # once a root
    return {
        "sample": len(ids),
        "readside_found": len(ours),
        "pgsync_found": len(theirs),
        "identical": identical,
        # fields equal wherever compared (and never different)
        "equal_fields": sorted(equal - {path for path, _kind in diffs}),
        "readside_example": ours.get(str(ids[0])),
        "pgsync_example": theirs.get(str(ids[0])),
        "differences": [
            {
                "field": path,
                "kind": kind,
                "roots": n,
                "readside": examples[(path, kind)][0],
                "pgsync": examples[(path, kind)][1],
            }
            for (path, kind), n in sorted(diffs.items())
        ],
    }


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10 or not value[:4].isdigit():
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(value: Any) -> Any:
    text = json.dumps(value, default=str)
    return value if len(text) <= 60 else text[:57] + "..."


def diff(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, str, Any, Any]]:
    """Differences between readside's (``a``) and pgsync's (``b``) document:
    ``(field, kind, a value, b value)``; kind ``same`` marks equal leaves."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else key
            if key not in b:
                yield sub, "only in readside", _short(a[key]), None
            elif key not in a:
                yield sub, "only in pgsync", None, _short(b[key])
            else:
                yield from diff(a[key], b[key], sub)
        return
    if isinstance(a, list) and isinstance(b, list):
        sub = f"{path}[]"
        by_id_a = _by_id(a)
        by_id_b = _by_id(b)
        if by_id_a is None or by_id_b is None:
            if len(a) != len(b):
                yield sub, "length", len(a), len(b)
            for x, y in zip(a, b, strict=False):
                yield from diff(x, y, sub)
            return
        if set(by_id_a) != set(by_id_b):
            yield sub, "different elements", sorted(by_id_a), sorted(by_id_b)
        elif list(by_id_a) != list(by_id_b):
            yield sub, "order (ids)", list(by_id_a), list(by_id_b)
        for key in by_id_a.keys() & by_id_b.keys():
            yield from diff(by_id_a[key], by_id_b[key], sub)
        return
    if a == b and type(a) is type(b):
        yield path, "same", a, b
        return
    da, db = _decimal(a), _decimal(b)
    if da is not None and db is not None and da == db:
        yield path, f"number form ({type(a).__name__} vs {type(b).__name__})", a, b
        return
    ta, tb = _instant(a), _instant(b)
    if ta is not None and tb is not None and ta == tb:
        yield path, "time form (same instant)", a, b
        return
    yield path, "value", _short(a), _short(b)


def _by_id(items: list[Any]) -> dict[Any, Any] | None:
    if not all(isinstance(x, dict) and "id" in x for x in items):
        return None
    return {x["id"]: x for x in items}


# ---------------------------------------------------------------- streaming
def bench_streaming(
    src: BenchSource, pgs: PgSync, es: elasticsearch.Elasticsearch, args: Any
) -> dict[str, Any]:
    """Both tools live while ``--changes`` UPDATEs of order_lines commit."""
    cfg = src.configs["aggregate"]
    alias = readside_alias(cfg)
    logger.info("streaming: starting the Debezium connector and pgsync --daemon")
    src.start_connector(cfg)
    pgs.start_daemon()
    worker = worker_mod.Worker(
        cfg,
        build_views(cfg, only=[AGG_VIEW]),
        worker_mod.build_sinks(cfg, ["elasticsearch"]),
    )
    failure: list[BaseException] = []

    def run_worker() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=run_worker, name="readside-worker", daemon=True)
    thread.start()
    indices = {"readside": alias, "pgsync": pgs.index}
    try:
        # A first change that both must show: both consumers are live.
        warm: list[float] = []
        _update(src.dsn, [(1, MARK - 1)], warm)
        seen = _poll_visible(es, indices, MARK - 1, 1, args.run_timeout, failure, pgs)
        if not all(s and s[-1][1] >= 1 for s in seen.values()):
            raise RuntimeError(f"streaming warm-up: not shown by all: {seen}")
        roots = random.Random(5).sample(
            range(2, args.roots + 1), min(args.changes, args.roots - 1)
        )
        changes = [(r, MARK + k) for k, r in enumerate(roots)]
        logger.info("streaming: %d single-row updates of order_lines", len(changes))
        commits: list[float] = []
        writer = threading.Thread(
            target=_update, args=(src.dsn, changes, commits), daemon=True
        )
        writer.start()
        samples = _poll_visible(
            es, indices, MARK, len(changes), args.run_timeout, failure, pgs
        )
        writer.join(args.run_timeout)
    finally:
        worker.stop()
        thread.join(60)
        pgs.stop_daemon()
    if len(commits) < len(changes):
        raise RuntimeError(f"streaming writer: {len(commits)} of {len(changes)}")
    first, last = commits[0], commits[-1]
    out: dict[str, Any] = {
        "changes": len(changes),
        "writer_s": last - first,
        "writes_per_s": len(changes) / (last - first) if last > first else None,
    }
    for tool in indices:
        series = samples.get(tool, [])
        if not series or series[-1][1] < len(changes):
            out[tool] = {"complete": False, "visible": series[-1][1] if series else 0}
            continue
        done = next(t for t, n in series if n >= len(changes))
        lags = sorted(_lags(series, commits))
        out[tool] = {
            "complete": True,
            "all_visible_s": done - first,
            "changes_per_s": len(changes) / (done - first),
            "after_last_commit_s": done - last,
            "lag_p50_s": lags[len(lags) // 2],
            "lag_p95_s": lags[min(len(lags) - 1, int(len(lags) * 0.95))],
            "lag_max_s": lags[-1],
            "polls": len(series),
        }
    return out


def _update(dsn: str, changes: Sequence[tuple[int, int]], commits: list[float]) -> None:
    """One autocommitted UPDATE per change: the first order line of root
    ``r`` (order and line ids are equal) gets ``qty``; appends commit times."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for root, qty in changes:
            line = (root - 1) * ORDERS_PER_ROOT + 1
            conn.execute("UPDATE order_lines SET qty = %s WHERE id = %s", (qty, line))
            commits.append(time.perf_counter())


def _lags(series: list[tuple[float, int]], commits: list[float]) -> Iterator[float]:
    """Commit-to-visible time of each change, taking change k as visible at
    the first poll that counted k + 1 changes (visibility in commit order)."""
    pos = 0
    for k, committed in enumerate(commits):
        while series[pos][1] < k + 1:
            pos += 1
        yield max(0.0, series[pos][0] - committed)


def _poll_visible(
    es: elasticsearch.Elasticsearch,
    indices: dict[str, str],
    qty: int,
    want: int,
    timeout_s: float,
    failure: list[BaseException],
    pgs: PgSync,
) -> dict[str, list[tuple[float, int]]]:
    """Per index, ``(time, roots with a line of qty or more)`` polled until it
    shows ``want`` of them; each index is refreshed before its count, so the
    count is what a search would see then."""
    query = {"range": {"orders.lines.qty": {"gte": qty}}}
    series: dict[str, list[tuple[float, int]]] = {tool: [] for tool in indices}
    done: set[str] = set()
    deadline = time.perf_counter() + timeout_s
    while len(done) < len(indices) and time.perf_counter() < deadline:
        if failure:
            raise RuntimeError(f"readside worker failed: {failure[0]!r}")
        if pgs.daemon is not None and pgs.daemon.poll() is not None:
            raise RuntimeError(f"pgsync daemon exited: {pgs.daemon_log_tail()}")
        for tool, index in indices.items():
            if tool in done:
                continue
            es.options(ignore_status=404).indices.refresh(index=index)
            resp = es.options(ignore_status=404).count(index=index, query=query)
            n = int(dict(resp.body).get("count", 0))
            series[tool].append((time.perf_counter(), n))
            if n >= want:
                done.add(tool)
        time.sleep(0.05)
    return series


# ---------------------------------------------------------------- report
_CLIENTS = {
    "elasticsearch": "elasticsearch-py (its default)",
    "opensearch": "opensearch-py (`OPENSEARCH=true`)",
}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    rs, pg = results["readside"], results["pgsync"]
    versions = {**m["packages"], **m["servers"]}
    lines = [
        f"## readside vs pgsync: the aggregate view `customers` into Elasticsearch "
        f"({results['roots']:,} roots, ~{2 * ORDERS_PER_ROOT} child rows per root)",
        "",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_mb']:,} MB RAM, "
        f"Python {m['python']}; servers: "
        + ", ".join(f"{k} {v}" for k, v in results["servers"].items()),
        "readside: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "pgsync (own virtualenv): "
        + ", ".join(f"{k} {v}" for k, v in results["pgsync_packages"].items()),
        f"pgsync's search client: {_CLIENTS[results['pgsync_client']]}"
        + (f". Why: {why}" if (why := results["pgsync_client_why"]) else ""),
        f"tables filled in {results['fill_s']:.1f}s",
        "",
        "| tool | run | roots | seconds | roots/s | process wall s | roots/s (wall) "
        "| docs in index | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| readside | `readside snapshot customers --sink elasticsearch` (chunks "
        f"of {results['chunk_size']:,}) | {rs['rows']:,} | {rs['elapsed_s']:.1f} "
        f"| {rs['roots_per_s']:,.0f} | {rs['wall_s']:.1f} "
        f"| {rs['rows'] / rs['wall_s']:,.0f} "
        f"| {rs['docs_held'].get('elasticsearch', 0):,} | {rs['peak_rss_mb']:.0f} |",
        f"| pgsync | `pgsync --config schema.json` (initial sync, after "
        f"`bootstrap`: {pg['bootstrap_s']:.1f}s) | {pg['roots']:,} "
        f"| {pg['own_s'] or pg['wall_s']:.1f} | {pg['roots_per_s']:,.0f} "
        f"| {pg['wall_s']:.1f} | {pg['roots_per_s_wall']:,.0f} "
        f"| {pg['docs_held']:,} | {pg['peak_rss_mb']:.0f} |",
        "",
        f"readside/pgsync roots/s: **{results['ratio']:.2f}** "
        f"({results['ratio_wall']:.2f} by process wall clock). "
        "Seconds: readside's `Loader.run()`; pgsync's own timer (connect, "
        "validate, create the index, sync). pgsync's index: "
        f"{pg['missing_roots']} roots missing, {pg['extra_docs']} extra documents.",
    ]
    docs = results.get("documents")
    if docs:
        lines += [
            "",
            f"### documents ({docs['sample']:,} sample roots read back from both "
            "indices)",
            "",
            f"found: readside {docs['readside_found']:,}, pgsync "
            f"{docs['pgsync_found']:,}; identical: {docs['identical']:,}; equal in "
            "every root: " + ", ".join(f"`{f}`" for f in docs["equal_fields"]),
        ]
        if docs["differences"]:
            lines += [
                "",
                "| field | difference | roots | readside | pgsync |",
                "|---|---|---:|---|---|",
            ]
            lines += [
                f"| `{d['field']}` | {d['kind']} | {d['roots']:,} "
                f"| `{json.dumps(d['readside'])}` | `{json.dumps(d['pgsync'])}` |"
                for d in docs["differences"]
            ]
    st = results.get("streaming")
    if st:
        lines += [
            "",
            f"### streaming: {st['changes']:,} single-row UPDATEs of order_lines "
            "(one per root), both tools live",
            "",
            f"writer: {st['writer_s']:.1f}s"
            + (f" ({st['writes_per_s']:,.0f} commits/s)" if st["writes_per_s"] else ""),
            "",
            "| tool | all visible after s | changes/s | after the last commit s "
            "| commit to visible p50 / p95 / max s |",
            "|---|---:|---:|---:|---:|",
        ]
        for tool, label in (
            ("readside", "readside (Debezium, Kafka, worker)"),
            ("pgsync", "pgsync --daemon (triggers, Redis queue)"),
        ):
            r = st[tool]
            if not r["complete"]:
                lines.append(
                    f"| {label} | not within the time budget ({r['visible']:,} "
                    "visible) | - | - | - |"
                )
                continue
            lines.append(
                f"| {label} | {r['all_visible_s']:.1f} | {r['changes_per_s']:,.0f} "
                f"| {r['after_last_commit_s']:.2f} | {r['lag_p50_s']:.2f} / "
                f"{r['lag_p95_s']:.2f} / {r['lag_max_s']:.2f} |"
            )
        lines += [
            "",
            "Commit to visible: a change counts as visible at the first poll "
            "(refresh, then count; every ~0.1 s) that counts as many changes as "
            "its rank in commit order.",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench pgsync", description=__doc__)
    p.add_argument("--roots", type=int, default=100_000, help="aggregate roots")
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument("--sample", type=int, default=1000, help="roots compared")
    p.add_argument("--changes", type=int, default=2000, help="streamed updates")
    p.add_argument("--parts", default="initial,documents,streaming")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--config", default=None, help="readside config of the stack")
    p.add_argument(
        "--admin-dsn", default="postgresql://postgres@127.0.0.1:15432/postgres"
    )
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
    client, why = choose_client(_es_url(base), args.pgsync_client)
    es = elasticsearch.Elasticsearch(_es_url(base), request_timeout=120)
    results: dict[str, Any] = {
        "machine": report.machine(base),
        "pgsync_packages": venv_packages(bin_dir),
        "servers": server_versions(es, args.admin_dsn),
        "roots": args.roots,
        "chunk_size": args.chunk_size,
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
