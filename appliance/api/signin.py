"""The sign-in page, sign-in and sign-out: a self-contained page (no external fonts or scripts).

The form carries a CSRF token that must match a cookie set with the page, so another site cannot
sign a browser in as someone else (login CSRF). Failures are counted per user name and per client
address (auth.sign_in_attempts); every attempt goes to the audit trail.
"""

from __future__ import annotations

import html
import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from appliance.access.auth import SESSION_COOKIE as COOKIE
from appliance.api.csrf import check_same_origin

if TYPE_CHECKING:
    from appliance.api.state import AppState

router = APIRouter(include_in_schema=False)
LOGIN_CSRF = "appliance_login_csrf"

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in · {title}</title>
<style>
:root {{ color-scheme: light dark; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }}
body {{ margin: 0; min-height: 100vh; display: grid; place-items: center; background: Canvas; color: CanvasText; }}
main {{ width: min(22rem, 90vw); padding: 2rem; border: 1px solid #8884; border-radius: 12px; }}
h1 {{ font-size: 1.25rem; margin: 0 0 1.25rem; }}
label {{ display: block; margin: .75rem 0 .25rem; font-weight: 600; }}
input {{ width: 100%; box-sizing: border-box; padding: .6rem; font: inherit; border: 1px solid #8888;
  border-radius: 6px; background: Field; color: FieldText; }}
button, a.button {{ display: block; width: 100%; box-sizing: border-box; margin-top: 1.25rem; padding: .65rem;
  font: inherit; font-weight: 600; border: 0; border-radius: 6px; background: #2563eb; color: #fff;
  text-align: center; text-decoration: none; cursor: pointer; }}
a.button {{ background: #374151; }}
.error {{ margin: 0 0 1rem; padding: .6rem; border-radius: 6px; background: #dc262622; color: inherit; }}
small {{ display: block; margin-top: 1.25rem; opacity: .75; }}
</style></head><body><main>
<h1>{title}</h1>
{error}
<form method="post" action="/login" id="signin">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
{oidc}
<small>Answers come only from your organisation's documents. Nothing leaves this server.</small>
</main></body></html>"""


def safe_next(path: str | None) -> str:
    """Only a path of this server: never //host or a scheme (an open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or path.startswith("/login"):
        return "/"
    return path


def login_page(state: AppState, next_path: str = "/", error: str | None = None, status: int = 200) -> HTMLResponse:
    settings = state.services.settings
    csrf = secrets.token_urlsafe(24)
    oidc = settings.auth.oidc
    button = (f'<a class="button" href="/auth/oidc/login?next={html.escape(safe_next(next_path), quote=True)}">'
              f'{html.escape(oidc.button_label)}</a>') if oidc else ""
    body = PAGE.format(title=html.escape(settings.ui.title), csrf=csrf, next=html.escape(safe_next(next_path)),
                       error=f'<p class="error" role="alert">{html.escape(error)}</p>' if error else "", oidc=button)
    response = HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})
    response.set_cookie(LOGIN_CSRF, csrf, httponly=True, samesite="strict", max_age=3600, path="/login")
    return response


def start_session(request: Request, state: AppState, user: str, response: Response,
                  sign_out_url: str | None = None) -> None:
    token = state.services.users.start_session(user, sign_out_url)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=secure, path="/",
                        max_age=int(state.services.settings.auth.session_max_hours * 3600))


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


@router.get("/login")
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return login_page(request.app.state.appliance, next)


@router.post("/login")
def login(request: Request, username: Annotated[str, Form(max_length=200)],
          password: Annotated[str, Form(max_length=1000)], csrf: Annotated[str, Form(max_length=100)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/") -> Any:
    state: AppState = request.app.state.appliance
    services = state.services
    check_same_origin(request)
    expected = request.cookies.get(LOGIN_CSRF, "")
    if not expected or not secrets.compare_digest(expected.encode(), csrf.encode()):
        return login_page(state, next, "The sign-in form expired: please try again.", status=400)
    name = username.strip().lower()
    client = _client(request)
    throttle = services.limits.sign_in
    keys = (f"user:{name}", f"ip:{client}")

    def refused() -> Any:
        known = name if services.users.get(name) is not None else "(unknown user)"
        services.audit.record("sign_in", known, outcome="refused", reason="too many failed attempts", client=client)
        return login_page(state, next, "Too many failed attempts: wait 15 minutes, or ask an administrator.",
                          status=429)

    if throttle.blocked(*keys):  # at once, without waiting for the attempts ahead
        return refused()
    # Checked, verified and counted as one step per name and address: attempts sent together queue.
    with services.limits.attempts.one_at_a_time(*keys):
        if throttle.blocked(*keys):
            return refused()
        user = services.users.verify_password(name, password)
        if user is None:
            throttle.failed(*keys)
    if user is None:
        # Only a known name is logged: what someone typed into the name box may be their password.
        known = name if services.users.get(name) is not None else "(unknown user)"
        services.audit.record("sign_in", known, outcome="failed", client=client)
        return login_page(state, next, "Wrong user name or password.", status=401)
    throttle.succeeded(f"user:{name}")
    services.audit.record("sign_in", user.name, outcome="ok", method="password", client=client)
    response = RedirectResponse(safe_next(next), status_code=303)
    start_session(request, state, user.name, response)
    response.delete_cookie(LOGIN_CSRF, path="/login")
    return response


def _onward(url: str) -> HTMLResponse:
    """A page that takes the browser on to the identity provider's sign-out. Not a redirect: the chat page's
    Content-Security-Policy (form-action 'self') makes Chromium block a form whose answer redirects to
    another origin; a page of ours that then navigates is allowed."""
    link = html.escape(url, quote=True)
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" '
            f'content="0;url={link}"><title>Signing out</title></head><body><p>Signing you out of your company '
            f'account… <a id="continue" href="{link}">Continue</a></p></body></html>')
    return HTMLResponse(body, headers={"cache-control": "no-store"})


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> Any:
    state: AppState = request.app.state.appliance
    check_same_origin(request)
    token = request.cookies.get(COOKIE)
    session = state.services.users.session(token)
    if session is not None and token:
        if not secrets.compare_digest(session.csrf.encode(), csrf.encode()):
            return HTMLResponse("Sign-out refused: it did not come from this server's page.", status_code=403)
        state.services.users.end_session(token)
        state.services.audit.record("sign_out", session.user.name, client=_client(request))
        if session.sign_out_url:  # opened at the identity provider, which offers a sign-out too
            onward = _onward(session.sign_out_url)
            onward.delete_cookie(COOKIE, path="/")
            return onward
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
