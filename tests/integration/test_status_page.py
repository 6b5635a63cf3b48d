"""The status page in headless Chromium (Debian's ``chromium``): it loads,
its script refreshes it from ``/v1/status``, it shows every view and sink, and
its lag figures grow while the pipeline is paused."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from typing import Any

import pytest
from apiserver import Server, start_server
from harness import wait_for

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE books (id int PRIMARY KEY, title text NOT NULL);
INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(1, 20) AS i;
INSERT INTO books SELECT i, 'book ' || i FROM generate_series(1, 20) AS i;
"""
VIEWS: dict[str, Any] = {
    "authors": {"table": "public.authors", "sinks": ["redis", "mongodb"]},
    "books": {"table": "public.books", "sinks": ["redis", "elasticsearch"]},
}
ROW = re.compile(
    r'<tr data-view="(?P<view>[^"]+)" data-sink="(?P<sink>[^"]+)">.*?'
    r'<td class="num lag-ms">(?P<ms>[^<]*)</td>'
    r'<td class="num lag-msgs">(?P<msgs>[^<]*)</td>'
)


def dump_dom(server: Server) -> str:
    """The page's DOM after its script ran for a few (virtual) seconds."""
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is not installed (apt-get install chromium)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=3000",
    ]
    proc = subprocess.run(
        [browser, *flags, "--dump-dom", f"{server.base}/status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def figures(dom: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(view, sink) -> (lag in ms, lag in messages) as the page shows them."""
    out = {}
    for m in ROW.finditer(dom):
        if m["ms"].isdigit() and m["msgs"].isdigit():
            out[(m["view"], m["sink"])] = (int(m["ms"]), int(m["msgs"]))
    return out


def test_status_page_pipeline_paused_shows_every_view_and_growing_lag(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.authors", "public.books"], VIEWS)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    server = start_server(p, {"status_interval_s": 0.5, "anonymous": True})
    try:
        wanted = {(v, s) for v, c in VIEWS.items() for s in c["sinks"]}

        def running() -> dict[tuple[str, str], tuple[int, int]] | None:
            shown = figures(dump_dom(server))
            return shown if set(shown) == wanted else None

        before = wait_for(running, 30, "every view and sink on the page")
        dom = dump_dom(server)
        assert int(re.search(r'data-refreshes="(\d+)"', dom)[1]) >= 1
        assert "Running snapshots" in dom
        assert "RUNNING" in dom  # the connector
        assert all(msgs == 0 for _ms, msgs in before.values()), before

        # pause the pipeline, keep writing: the page's lag grows
        assert worker.terminate() == 0
        for i in range(1, 21):
            p.sql("UPDATE books SET title = %s WHERE id = %s", (f"new {i}", i))
        time.sleep(3)

        def grown() -> dict[tuple[str, str], tuple[int, int]] | None:
            shown = figures(dump_dom(server))
            books = [shown.get(("books", s)) for s in ("redis", "elasticsearch")]
            ok = all(
                b is not None and b[1] >= 20 and b[0] > before[("books", "redis")][0]
                for b in books
            )
            return shown if ok else None

        after = wait_for(grown, 30, "the books lag to grow on the page")
        assert after[("books", "redis")][0] >= 3000
        assert after[("authors", "redis")][1] == 0
    finally:
        server.stop()
