"""Get by id on a lean path: ``GET /v1/views/{view}/docs/{doc_id}`` answered
by a plain ASGI handler, before FastAPI's routing.

The hottest route of the API does the same as its FastAPI twin in
:mod:`query.routes` (which stays, for the OpenAPI schema and as the
reference): the same key check, focus, refusal of unknown parameters,
``min_lsn`` wait, store call on the service's pool, body and
``X-Readside-*`` headers, and the same errors through the server's error
answer. What it skips is the framework's per-request work: route matching
over every route, parameter parsing through pydantic, dependency solving and
the response classes (measured: about two thirds of a request's time in the
server; ``docs/benchmarks.md``).

A request that is not exactly that route goes on to FastAPI untouched.

The id is one path segment, percent-encoded (docs/query-api.md: ids in
URLs): the segments are split on the raw path and each decoded once, so an
id holding ``/`` (``docs%2Fintro``) or ``%`` (``%253A``) is read as written.

It is also where every other ``/v1/views/{view}/...`` request shows its
key first: a request without a valid key, or whose key may not read the view
(another view, another focus), is refused here, before FastAPI parses its
query parameters or its body, so no caller without a key learns how a
request would be validated, and none makes the server parse a body. The
routes check the key again (and the FastAPI twin of get by id is answered
by the routes alone when this class is not in front).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.errors import ReadsideError
from query import lsn as lsn_mod
from query import validate
from query.answer import Answer, doc_body
from query.errors import QueryError
from query.service import Service, key_from_headers

PREFIX = "/v1/views/"
TEMPLATE = "/v1/views/{view}/docs/{doc_id}"


#: JSON as FastAPI's ``JSONResponse`` writes it (one encoder for every answer)
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
)


def _dumps(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode("utf-8")


def _answer_bytes(
    answer: Answer, body: dict[str, Any]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and the freshness headers of an answer (as
    :func:`query.routes._respond`)."""
    f = answer.freshness
    mark = None if f.watermark_lsn is None else lsn_mod.format_lsn(f.watermark_lsn)
    applied = None if f.applied_lsn is None else lsn_mod.format_lsn(f.applied_lsn)
    fresh = {
        "store": answer.store,
        "watermark_lsn": mark,
        "applied_lsn": applied,
        "lag_ms": f.lag_ms,
    }
    data = _dumps({"view": answer.view, **body, "freshness": fresh})
    headers = [
        (b"content-length", str(len(data)).encode()),
        (b"content-type", b"application/json"),
        (b"x-readside-store", answer.store.encode()),
    ]
    if mark is not None:
        headers.append((b"x-readside-watermark-lsn", mark.encode()))
    if applied is not None:
        headers.append((b"x-readside-applied-lsn", applied.encode()))
    if f.lag_ms is not None:
        headers.append((b"x-readside-lag-ms", str(f.lag_ms).encode()))
    return data, headers


@dataclass(frozen=True, slots=True)
class Ready:
    """A get by id answered: status, body and headers (``content-length``
    among them)."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


def _is_get_by_id(scope: Scope, parts: list[str]) -> bool:
    return (
        len(parts) == 3
        and parts[1] == "docs"
        and parts[0] != ""
        and parts[2] != ""
        and scope["method"] == "GET"
    )


def _segments(scope: Scope, path: str) -> list[str]:
    """The path's segments after :data:`PREFIX`, each percent-decoded once
    (from the raw path, so that an encoded ``/`` stays inside its segment)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None or not raw.startswith(PREFIX.encode()):
        return path[len(PREFIX) :].split("/")
    return [
        unquote_to_bytes(part).decode("utf-8", "replace")
        for part in raw[len(PREFIX) :].split(b"/")
    ]


class FastGet:
    """ASGI middleware answering get by id itself, and checking the key of
    every other ``/v1/views`` request before it goes on.

    Args:
        app: the FastAPI app (everything but get by id).
        service: the server's shared state.
        route: the FastAPI route of get by id, put in the scope as the router
            would (metrics label requests by its template).
        error: the server's answer to a :class:`ReadsideError`.
        too_large: the server's answer to a request that declares a body
            over the limit (``None``: within it).
    """

    def __init__(
        self,
        app: ASGIApp,
        service: Service,
        route: object,
        error: Callable[[ReadsideError], ASGIApp],
        too_large: Callable[[Scope], ASGIApp | None],
    ) -> None:
        self.app = app
        self.svc = service
        self.route = route
        self.error = error
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(PREFIX):
            parts = _segments(scope, path)
            if _is_get_by_id(scope, parts):
                result = await self.answer(scope, parts)
                if isinstance(result, Ready):
                    await send(
                        {
                            "type": "http.response.start",
                            "status": result.status,
                            "headers": result.headers,
                        }
                    )
                    await send({"type": "http.response.body", "body": result.body})
                else:
                    await result(scope, receive, send)
                return
            try:
                self._guard(scope, parts[0])
            except ReadsideError as exc:
                await self.error(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def parts(self, scope: Scope) -> list[str] | None:
        """The path segments of a get by id (view, ``docs``, id), or ``None``
        when ``scope`` is any other request."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            return None
        parts = _segments(scope, path)
        return parts if _is_get_by_id(scope, parts) else None

    async def answer(self, scope: Scope, parts: list[str]) -> Ready | ASGIApp:
        """The answer to a get by id (``parts`` from :meth:`parts`): the
        response itself, or the ASGI app of the error that refuses it."""
        scope["route"] = self.route
        try:
            view = self._guard(scope, parts[0])
        except ReadsideError as exc:
            return self.error(exc)
        refused = self.too_large(scope)
        if refused is not None:
            return refused
        try:
            status, data, headers = await self._get(scope, view, parts[2])
        except ReadsideError as exc:
            return self.error(exc)
        return Ready(status, data, headers)

    def _guard(self, scope: Scope, view: str) -> str:
        """The view that answers a request for ``view`` with the request's
        key (:meth:`Service.authorize`, :meth:`Service.resolve`).

        Raises:
            Unauthorized, Forbidden, UnknownView, OutOfFocus: refused.
        """
        auth = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization" and auth is None:
                auth = value.decode("latin-1")
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
        key = self.svc.authorize(key_from_headers(auth, api_key), view)
        return self.svc.resolve(key, view)

    async def _get(
        self, scope: Scope, view: str, doc_id: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Get by id of ``view`` (the view :meth:`_guard` resolved)."""
        svc = self.svc
        params = dict(
            parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        )
        unknown = sorted(set(params) - {"min_lsn"})
        if unknown:
            shown = ", ".join(repr(name[:40]) for name in unknown[:5])
            raise QueryError("parameter", f"unknown query parameter(s): {shown}")
        raw = params.get("min_lsn")
        lsn = None if raw is None else lsn_mod.parse(raw)
        ident = validate.doc_id(doc_id)
        await svc.await_lsn(view, lsn)
        answer = await svc.get(view, ident)
        status, body = doc_body(view, ident, answer)
        data, headers = _answer_bytes(answer, body)
        return status, data, headers
