"""A rebuild whose catch-up meets rows already gone from the source
(``bench faults --quick --seed 1`` found it in CI).

An update that leaves a TOASTed column alone carries a placeholder; the
worker reads the value from the source row (:mod:`pipeline.toast`), and
skips the update when the row is gone: the row's delete, a later record,
removes the document. The rebuild's catch-up replays the topic up to the
ends it sampled; a row deleted at the source after that but before the
catch-up read it is gone, and its delete lies past those ends. Switched
there, the new generation would hold such a document at an older version
than the live one, and sites would see it go back in time until a live
worker applied the delete.

Here only the rebuild can apply those deletes before its switch: the live
worker is stopped, and the connector is paused while the rows are deleted,
so their records come after the ends the catch-up samples first. At the
switch, every store must hold each document at a version no older than the
live generation did, and the gone rows deleted.

The same again with PostgreSQL restarted while the rebuild waits for the
connector (``bench faults`` seed 53): the rebuild waits the outage out and
goes on, it does not exit.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from harness import REPO, SINKS, stack_config, wait_for
from test_toast_compaction import SCHEMA, VIEWS

from connectors.debezium import ConnectClient, status
from pipeline.stack import runner
from pipeline.worker import build_sinks

# exclusive: stops the stack's PostgreSQL
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

# the TOASTed profiles table of test_toast_compaction (40 rows)
GONE = list(range(1, 41, 3))


def _connector(p, action: str, state: str) -> None:
    cfg = p.config
    ConnectClient.of(cfg.connect).request(
        "PUT", f"/connectors/{cfg.connect.connector}/{action}"
    )

    def reached() -> bool:
        st = status(cfg)
        return st["state"] == state and all(t["state"] == state for t in st["tasks"])

    wait_for(reached, 60, f"the connector to be {state}")


@pytest.mark.parametrize(
    "restart_source", [False, True], ids=["no-restart", "source-restart"]
)
def test_rebuild_catch_up_goes_on_to_the_deletes_of_rows_it_found_gone(
    make_pipeline, tmp_path, restart_source
):
    p = make_pipeline(SCHEMA, ["public.profiles"], VIEWS)
    p.apply_connector()
    worker = p.start_worker()
    # Updates that leave bio alone: records with the TOAST placeholder.
    for _ in range(3):
        p.sql("UPDATE profiles SET name = name || '.'")
    p.wait_drained(timeout=180)
    p.assert_converged()

    ids = [str(i) for i in range(1, 41)]
    sinks = build_sinks(p.config, list(SINKS))
    log = tmp_path / "rebuild.log"
    try:
        for sink in sinks.values():
            sink.open()
        live = {name: sink.fetch("profiles", ids) for name, sink in sinks.items()}
        for name, got in live.items():
            assert sorted(got) == sorted(ids), name

        assert worker.terminate() == 0, worker.tail()
        _connector(p, "pause", "PAUSED")
        p.sql("DELETE FROM profiles WHERE id = ANY(%s)", (GONE,))
        with log.open("w") as out:
            rebuild = subprocess.Popen(
                p.cli_args("snapshot", "profiles", "--rebuild"),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        paused = True
        try:

            def switched() -> bool:
                return log.read_text().count("rebuild switched view=profiles") == 3

            # The catch-up finds the rows gone and waits for the connector
            # to produce their deletes (or, wrongly, switches at once).
            wait_for(
                lambda: "rebuild catch-up goes on" in log.read_text() or switched(),
                120,
                "the catch-up to reach its first ends",
            )
            if restart_source and not switched():
                # The rebuild now waits for the paused connector, reading the
                # replication slot: the source goes away under that read.
                stack = stack_config()
                runner.stop_service(stack, "postgres")
                try:
                    wait_for(
                        lambda: (
                            "source unreachable" in log.read_text()
                            or rebuild.poll() is not None
                        ),
                        60,
                        "the rebuild to meet the outage",
                    )
                finally:
                    runner.start_service(stack, "postgres")
                assert rebuild.poll() is None, log.read_text()[-3000:]
            _connector(p, "resume", "RUNNING")
            paused = False
            wait_for(switched, 180, "the switch in every store")
            # Nothing writes generation 2 now but the stopped live worker.
            behind = []
            for name, sink in sinks.items():
                assert sink.generation("profiles") == 2, name  # type: ignore[attr-defined]
                now = sink.fetch("profiles", ids)
                for ident in ids:
                    was, got = live[name][ident], now.get(ident)
                    if got is None or got.version < was.version:
                        behind.append((name, ident, was.version, got))
                    elif int(ident) in GONE:
                        assert got.doc is None, (name, ident, got)
                    else:
                        assert got.doc == was.doc, (name, ident)
            assert not behind, f"(sink, id, live version, rebuilt): {behind}"
        finally:
            if paused:
                _connector(p, "resume", "RUNNING")
            p.start_worker()  # the rebuild drops the old generation after it
            assert rebuild.wait(300) == 0, log.read_text()[-3000:]
    finally:
        for sink in sinks.values():
            sink.close()
    p.wait_drained(timeout=180)
    p.assert_converged()
