"""JSON 404/405 for /v1 paths no route takes (the UI mounted at / would otherwise answer them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from appliance.api.errors import ApiError

router = APIRouter()


@router.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
                                              "QUERY", "CONNECT"], include_in_schema=False)
def unmatched(rest: str, request: Request) -> None:
    path = request.url.path
    known = [r for r in _routes(request.app.routes) if r.path != "/v1/{rest:path}"]
    if any(r.path_regex.match(path) for r in known):
        raise ApiError(405, f"{request.method} is not allowed on {path}")
    raise ApiError(404, f"no such endpoint: {request.method} {path}")


def _routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every API route of the app, in the routers it includes too (FastAPI keeps an included router whole)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router (FastAPI keeps it whole)
            yield from _routes(route.original_router.routes)
