"""One rebuild of a view in a sink at a time.

A ``readside snapshot VIEW --rebuild`` makes generation n+1 of the view in
each of its sinks, fills it and switches to it. A second run of it started
while the first goes on (from another terminal, a job scheduler that started
it again, or with ``--restart`` by someone who took the first for stuck)
made the same generation again: its ``create`` dropped what the first had
filled, and the first then switched the sites to a generation that lacked
it. So each run holds, while it runs, a PostgreSQL advisory lock per
(view, sink) on the source database, which every run reaches anyway:

* a second run is refused at once, naming the run that holds the lock (its
  host and process id, from the holder's ``application_name``);
* the lock is the session's: a run that exits, or is killed, loses it with
  its connection. The session asks the server to probe the client every few
  seconds (``tcp_keepalives_*``), so a run on a machine that vanished
  releases it within a minute, not after the server's default two hours;
* a restart of PostgreSQL ends the session too: the run looks that it still
  holds its locks before each step and before the switch, and when the
  session is gone it starts over from its last recorded step, taking them
  again (:func:`rebuild_lock` then raises a transient error, which the run
  waits out as any outage of the source).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from pipeline.config import Config
from pipeline.errors import FatalError, TransientError

#: ``classid`` of readside's advisory locks (``objid``: of the view and sink)
LOCK_CLASS = 0x52454244  # "REBD"
#: how the server probes a client that went silent: first after this many
#: seconds, then every ``interval`` seconds, ``count`` times
KEEPALIVE = {"idle": 10, "interval": 5, "count": 6}


def lock_id(view: str, sink: str) -> int:
    """The advisory lock's ``objid`` (a signed 32-bit integer) of a pair."""
    digest = hashlib.sha256(f"rebuild\0{view}\0{sink}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def holder_name(view: str) -> str:
    """What a run names itself as in ``pg_stat_activity``."""
    return f"readside rebuild {view} pid {os.getpid()} on {socket.gethostname()}"[:63]


@contextmanager
def rebuild_lock(
    cfg: Config, view: str, sinks: list[str]
) -> Iterator[Callable[[], None]]:
    """Hold the rebuild locks of ``view`` in ``sinks`` while the block runs;
    the block gets a function that raises :class:`TransientError` when they
    are no longer held (their session ended).

    Raises:
        FatalError: another run holds one of them.
        TransientError: the source cannot be reached.
    """
    options = " ".join(f"-c tcp_keepalives_{k}={v}" for k, v in KEEPALIVE.items())
    try:
        conn = psycopg.connect(
            cfg.source.dsn.get_secret_value(),
            autocommit=True,
            connect_timeout=10,
            application_name=holder_name(view),
            options=options,
        )
    except psycopg.OperationalError as exc:
        raise TransientError(f"postgres: {exc}") from exc
    with conn:
        for sink in sorted(sinks):
            objid = lock_id(view, sink)
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (LOCK_CLASS, objid)
            ).fetchone()
            if row is None or not row[0]:
                raise FatalError(
                    f"another `readside snapshot {view} --rebuild` is running "
                    f"into sinks.{sink} ({_holder(conn, objid)}); wait for it "
                    "to end, or stop it: the next run goes on from where it "
                    "stopped"
                )

        def held() -> None:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise TransientError(
                    f"postgres: the session that holds the rebuild's locks "
                    f"ended ({exc}); the run takes them again"
                ) from exc

        yield held


def _holder(conn: psycopg.Connection[tuple[object, ...]], objid: int) -> str:
    """Who holds the lock, as its session names itself."""
    row = conn.execute(
        "SELECT a.application_name, a.client_addr::text FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objid = %s::oid "
        "AND l.objsubid = 2 AND l.granted",
        (LOCK_CLASS & 0xFFFFFFFF, objid & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return "it ended meanwhile; run this again"
    name, addr = row
    return f"{name or 'a session without a name'}, from {addr or 'a local socket'}"
