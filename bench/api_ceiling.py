"""The ceiling of ``python -m bench api``'s HTTP rows: the ASGI server alone.

``python -m bench.api_ceiling PORT BODY_FILE`` serves, with the uvicorn
settings ``readside serve`` uses, an ASGI app that answers every request with
the bytes of ``BODY_FILE`` (a real answer of the API, so that the reply is
the same size) and does nothing else: no routing, no key, no store. What it
reaches at the same concurrency is what any handler behind that server can
reach on the machine; the API's row is read against it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def constant_app(body: bytes) -> Any:
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> int:
    import uvicorn

    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    uvicorn.run(
        constant_app(body),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
