"""The ``/v1/views/{view}/...`` routes: get, multi-get, search, filter.

Every input passes :mod:`query.validate` (and :func:`query.lsn.parse` for
``min_lsn``) before anything waits or reads, so a bad request costs no store
call. Query parameters a route does not know are refused (400), as are
unknown fields of a JSON body. Answers carry the freshness of the store that
answered, in the body and in ``X-Readside-*`` headers.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from query import lsn as lsn_mod
from query import validate
from query.answer import Answer, doc_body
from query.errors import QueryError
from query.service import Service, presented_key

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/views")

KeyHeader = Annotated[str | None, Header(alias="X-Api-Key", include_in_schema=True)]
MinLsn = Annotated[
    str | None,
    Query(description="answer once the view includes every change up to this LSN"),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MgetBody(_Body):
    ids: list[Any]


class SearchBody(_Body):
    query: str | None = None
    filters: dict[str, Any] | None = None
    sort: list[Any] | None = None
    page: int = 1
    size: int | None = None  # default: 20, or api.max_page_size if smaller


class FilterBody(_Body):
    where: dict[str, Any]
    limit: int | None = None  # default: 100, or api.max_page_size if smaller
    sort: list[str] | None = None


# -- helpers ---------------------------------------------------------------------


def _service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def _start(
    request: Request, view: str, x_api_key: str | None, allowed: set[str]
) -> tuple[Service, str, int | None]:
    """Authorize, refuse unknown parameters, parse ``min_lsn``; the view that
    answers (the key's focus view when the key is bound to a focus)."""
    svc = _service(request)
    key = svc.authorize(presented_key(request, x_api_key), view)
    view = svc.resolve(key, view)
    unknown = sorted(set(request.query_params) - allowed - {"min_lsn"})
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise QueryError("parameter", f"unknown query parameter(s): {shown}")
    raw = request.query_params.get("min_lsn")
    return svc, view, (None if raw is None else lsn_mod.parse(raw))


def _freshness(answer: Answer) -> dict[str, Any]:
    f = answer.freshness
    return {
        "store": answer.store,
        "watermark_lsn": None
        if f.watermark_lsn is None
        else lsn_mod.format_lsn(f.watermark_lsn),
        "applied_lsn": None
        if f.applied_lsn is None
        else lsn_mod.format_lsn(f.applied_lsn),
        "lag_ms": f.lag_ms,
    }


def _respond(answer: Answer, body: dict[str, Any], status: int = 200) -> JSONResponse:
    fresh = _freshness(answer)
    headers = {"X-Readside-Store": answer.store}
    if fresh["watermark_lsn"] is not None:
        headers["X-Readside-Watermark-Lsn"] = fresh["watermark_lsn"]
    if fresh["applied_lsn"] is not None:
        headers["X-Readside-Applied-Lsn"] = fresh["applied_lsn"]
    if answer.lag_ms is not None:
        headers["X-Readside-Lag-Ms"] = str(answer.lag_ms)
    return JSONResponse(
        {"view": answer.view, **body, "freshness": fresh}, status, headers=headers
    )


def _hits(answer: Answer) -> list[dict[str, Any]]:
    return [{"id": i, "doc": d} for i, d in answer.docs.items()]


def _page_size(svc: Service, size: object) -> None:
    if isinstance(size, int) and size > svc.api.max_page_size:
        raise QueryError(
            "size", f"size {size} is above the limit of {svc.api.max_page_size}"
        )


# -- by id -----------------------------------------------------------------------


@router.get("/{view}/docs/{doc_id}", summary="One document by id")
async def get_doc(
    request: Request,
    view: str,
    doc_id: str,
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(request, view, x_api_key, set())
    ident = validate.doc_id(doc_id)
    await svc.await_lsn(view, lsn)
    answer = await svc.get(view, ident)
    status, body = doc_body(view, ident, answer)
    return _respond(answer, body, status)


async def _mget(
    svc: Service, view: str, ids: list[Any], lsn: int | None
) -> JSONResponse:
    if len(ids) > svc.api.max_ids:
        raise QueryError("size", f"at most {svc.api.max_ids} ids per call")
    wanted = validate.doc_ids(ids)
    await svc.await_lsn(view, lsn)
    answer = await svc.call(lambda: svc.client.get_many(view, wanted, min_lsn=lsn))
    missing = [i for i in wanted if i not in answer.docs]
    return _respond(answer, {"docs": answer.docs, "missing": missing})


@router.get("/{view}/docs", summary="Documents by id (repeat ?ids=)")
async def get_docs(
    request: Request,
    view: str,
    ids: Annotated[list[str], Query()],
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(request, view, x_api_key, {"ids"})
    return await _mget(svc, view, list(ids), lsn)


@router.post("/{view}/mget", summary="Documents by id (JSON body)")
async def post_mget(
    request: Request,
    view: str,
    body: MgetBody,
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(request, view, x_api_key, set())
    return await _mget(svc, view, body.ids, lsn)


# -- search ----------------------------------------------------------------------


async def _search(svc: Service, view: str, body: SearchBody, lsn: int | None) -> Any:
    wanted = min(20, svc.api.max_page_size) if body.size is None else body.size
    _page_size(svc, wanted)
    text = validate.query_text(body.query)
    validate.search_filters(body.filters)  # refused before waiting; checked again
    sort = [f"-{k}" if o == "desc" else k for k, o in validate.sort_keys(body.sort)]
    page, size = validate.page(body.page, wanted)
    await svc.await_lsn(view, lsn)
    answer = await svc.call(
        lambda: svc.client.search(
            view, text, body.filters, sort, page, size, min_lsn=lsn
        )
    )
    return _respond(
        answer,
        {"total": answer.total, "page": page, "size": size, "hits": _hits(answer)},
    )


def _get_filters(raw: list[str]) -> dict[str, Any]:
    """``field:value`` pairs; a field given twice matches any of its values."""
    out: dict[str, list[str]] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep:
            raise QueryError("filters", f"filter {item[:40]!r} is not field:value")
        out.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _get_ranges(raw: list[str]) -> dict[str, Any]:
    """``field:op:bound`` triples (``price:gte:10``, ``day:lt:2024-03-01``):
    a bound that reads as a number is one, else an instant."""
    out: dict[str, dict[str, Any]] = {}
    for item in raw:
        name, op, bound = [*item.split(":", 2), "", ""][:3]
        if not bound:
            raise QueryError("filters", f"range {item[:40]!r} is not field:op:bound")
        try:
            value: Any = float(bound)
        except ValueError:
            value = bound
        out.setdefault(name, {})[op] = value
    return out


@router.get("/{view}/search", summary="Search (Elasticsearch query string)")
async def get_search(
    request: Request,
    view: str,
    q: str | None = None,
    filter: Annotated[list[str] | None, Query()] = None,
    range: Annotated[list[str] | None, Query()] = None,
    sort: str | None = None,
    page: int = 1,
    size: int | None = None,
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(
        request, view, x_api_key, {"q", "filter", "range", "sort", "page", "size"}
    )
    body = SearchBody(
        query=q,
        filters={**_get_filters(filter or []), **_get_ranges(range or [])} or None,
        sort=[s for s in (sort or "").split(",") if s] or None,
        page=page,
        size=size,
    )
    result: JSONResponse = await _search(svc, view, body, lsn)
    return result


@router.post("/{view}/search", summary="Search (JSON body)")
async def post_search(
    request: Request,
    view: str,
    body: SearchBody,
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(request, view, x_api_key, set())
    result: JSONResponse = await _search(svc, view, body, lsn)
    return result


# -- filter ----------------------------------------------------------------------


@router.post("/{view}/filter", summary="Equality and range filter (JSON body)")
async def post_filter(
    request: Request,
    view: str,
    body: FilterBody,
    min_lsn: MinLsn = None,
    x_api_key: KeyHeader = None,
) -> JSONResponse:
    svc, view, lsn = _start(request, view, x_api_key, set())
    wanted = min(100, svc.api.max_page_size) if body.limit is None else body.limit
    _page_size(svc, wanted)
    validate.where(body.where)  # refused before waiting; the client checks again
    validate.sort_keys(body.sort)
    limit = validate.limit(wanted)
    await svc.await_lsn(view, lsn)
    answer = await svc.call(
        lambda: svc.client.filter(view, body.where, limit, sort=body.sort, min_lsn=lsn)
    )
    return _respond(
        answer, {"total": answer.total, "limit": limit, "hits": _hits(answer)}
    )
