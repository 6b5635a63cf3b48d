"""The ceilings of ``python -m bench api``'s HTTP rows: the server alone.

``python -m bench.api_ceiling PORT BODY_FILE`` serves, with the uvicorn
settings ``readside serve`` uses, an ASGI app that answers every request with
the bytes of ``BODY_FILE`` (a real answer of the API, so that the reply is
the same size) and does nothing else: no routing, no key, no store. What it
reaches at the same concurrency is what any handler behind that server can
reach on the machine.

``python -m bench.api_ceiling PORT BODY_FILE wire`` serves the same answer
the way ``readside serve`` writes get by id (:mod:`query.wire`: uvicorn's
protocol, one write, no ASGI call): the most the API's get by id can reach
with a store that answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Scope

from query import wire
from query.fastpath import FastGet, Ready
from query.measured import Measured


def answer_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]


def constant_app(body: bytes) -> Any:
    headers = answer_headers(body)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class ConstantGet(FastGet):
    """Get by id answered with ``body``: no key, no store."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.ready = Ready(200, body, headers)

    def parts(self, scope: Scope) -> list[str] | None:
        return ["", "", ""] if scope["type"] == "http" else None

    async def answer(self, scope: Scope, parts: list[str]) -> Ready | ASGIApp:
        return self.ready


def main() -> int:
    import uvicorn

    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    app = constant_app(body)
    options: dict[str, Any] = {}
    if sys.argv[3:] == ["wire"]:
        app = Measured(ConstantGet(body, answer_headers(body)))
        options["http"] = wire.HttpProtocol
    uvicorn.run(
        app,
        **options,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
