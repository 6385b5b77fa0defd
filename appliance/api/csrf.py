"""CSRF: a write made with a browser's cookie (or by the local operator) must come from a page of
this server."""

from __future__ import annotations

from fastapi import Request

from appliance.access.auth import SESSION_COOKIE
from appliance.api.errors import ApiError


def check_same_origin(request: Request) -> None:
    """CSRF: a cookie-authenticated write must come from a page of this server. Browsers send Origin on
    every cross-site POST (and Sec-Fetch-Site), which a forged form cannot set to ours."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if origin is None and site is None and SESSION_COOKIE in request.cookies:
        # Every browser sends one of them on a POST; a write on a session cookie without either is not
        # the page's (the local operator's curl on loopback, with no cookie, still goes through).
        raise ApiError(403, "a write signed in by cookie must come from this server's page (Origin)")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, "cross-site request refused")
    if origin == "null":  # a sandboxed or privacy-mode origin: trusted only if the browser says same-origin
        if site != "same-origin":
            raise ApiError(403, "cross-origin request refused")
    elif origin is not None:
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1].lower() != host.lower():
            raise ApiError(403, "cross-origin request refused")
