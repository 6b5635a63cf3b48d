"""Get by id written to the connection in one piece, below ASGI.

``readside serve`` runs on uvicorn's httptools protocol. Every request
there becomes an ASGI call: the app sends the response head and then its
body as two messages, and uvicorn writes each to the socket as it comes,
one system call each, after checking every header again. For the hottest
route that is a good part of a request's time in the server
(``docs/benchmarks.md``).

:class:`HttpProtocol` is that same protocol, with one change: when a
request is a get by id (:meth:`FastGet.parts <query.fastpath.FastGet.parts>`)
and the app is readside's own, the request's task runs :meth:`_wire`
instead of the app. It gets the answer from
:meth:`FastGet.answer <query.fastpath.FastGet.answer>` (the same key check,
focus, ``min_lsn`` wait, store read, body and headers as the ASGI path) and
writes the status line, uvicorn's default headers (``date``, ``server``),
the answer's headers and its body in one write. Everything else is
uvicorn's: the parsing, the scope, keep-alive and its timeout, pipelined
requests (queued behind the one in flight, each started by uvicorn once the
one before is complete), flow control, graceful shutdown, TLS. An error or a
refusal (401, 404, 413, 503 ...) is the ASGI app :class:`FastGet` returns,
run on the request's usual ASGI path. Each request is counted and timed by
:class:`~query.measured.Measured` as before.

The class relies on parts of uvicorn that are not its public API (the
protocol's ``_start_asgi_task`` and the request cycle's attributes), so
:func:`protocol` chooses it only for the uvicorn releases it was tested
with (:data:`TESTED`); with any other, get by id goes through ASGI
(:class:`FastGet`), with the same answers.
"""

from __future__ import annotations

import functools
import http
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from query.fastpath import FastGet, Ready
from query.measured import Measured

logger = logging.getLogger(__name__)

#: what uvicorn refuses in a header value: control characters but tab
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")

#: uvicorn releases (major, minor) whose httptools protocol this module was
#: tested with (tests/unit/test_wire.py)
TESTED = {(0, 55)}


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def _front(app: Any) -> tuple[Measured, FastGet] | None:
    """readside's measuring middleware and its get by id handler, found
    under the layers uvicorn puts around the app it loaded (each keeps the
    next as ``.app``); ``None`` when ``app`` is not readside's."""
    for _ in range(8):
        if isinstance(app, Measured) and isinstance(app.app, FastGet):
            return app, app.app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def protocol() -> type[Any] | str:
    """The HTTP protocol of ``readside serve``: :class:`HttpProtocol` with
    a uvicorn release it was tested with, else uvicorn's own (``"auto"``)."""
    import uvicorn

    try:
        release = tuple(int(n) for n in uvicorn.__version__.split(".")[:2])
    except ValueError:
        release = ()
    if release not in TESTED:
        logger.info(
            "get by id through ASGI: uvicorn %s is not a release its one-write "
            "path was tested with (%s)",
            uvicorn.__version__,
            ", ".join(f"{a}.{b}" for a, b in sorted(TESTED)),
        )
        return "auto"
    return HttpProtocol


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing get by id in one piece."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readside = _front(self.app)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is self.app and self.readside is not None:
            parts = self.readside[1].parts(cycle.scope)
            if parts is not None:
                app = functools.partial(_wire, self.readside, cycle, parts)
        super()._start_asgi_task(cycle, app)


async def _wire(
    front: tuple[Measured, FastGet],
    cycle: Any,
    parts: list[str],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """A get by id as the ASGI app of its request cycle (so that uvicorn
    runs it as a task of its own, and answers 500 should it fail), writing
    the answer to the cycle's transport itself."""
    measured, fast = front
    start = time.perf_counter()
    # counted as 500 should anything below raise, as Measured counts it
    status: int | None = 500
    try:
        result = await fast.answer(scope, parts)
        if not isinstance(result, Ready):
            status = None  # measured.run counts it
            refusal: ASGIApp = result
            await measured.run(refusal, scope, receive, send, start)
            return
        if _BAD_VALUE.search(b"".join(value for _, value in result.headers)):
            raise RuntimeError("Invalid HTTP header value.")  # as uvicorn checks
        status = result.status
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            return  # as uvicorn's send: nothing to write to
        out = [_status_line(status)]
        for name, value in cycle.default_headers:
            out += [name, b": ", value, b"\r\n"]
        for name, value in result.headers:
            out += [name, b": ", value, b"\r\n"]
        if not cycle.keep_alive:
            out.append(b"connection: close\r\n")
        out += [b"\r\n", result.body]
        cycle.response_started = True
        cycle.transport.write(b"".join(out))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
    finally:
        if status is not None:
            measured.observe(scope, status, start)
    cycle.on_response()
