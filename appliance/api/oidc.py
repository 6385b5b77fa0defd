"""Sign-in with the company's OpenID Connect provider: authorization code flow with PKCE.

The provider is on the company's network (Keycloak, Entra ID, ADFS, Okta...), so nothing here leaves
it. The ID token's signature is checked against the provider's JWKS, with its issuer, audience,
expiry and the nonce of this very sign-in; the `state` must come back to the browser that started
the sign-in (a cookie), so a stolen callback URL signs nobody in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from appliance.api.signin import login_page, safe_next, start_session

if TYPE_CHECKING:
    from appliance.access.shared_state import SharedState
    from appliance.api.state import AppState
    from appliance.settings import OidcSettings

router = APIRouter(include_in_schema=False)
STATE_COOKIE = "appliance_oidc_state"
PENDING_S = 600  # a sign-in must come back within 10 minutes


class OidcError(Exception):
    """The provider or its answer is not usable; the message is shown on the sign-in page."""


class OidcClient:
    def __init__(self, settings: OidcSettings, shared: SharedState | None = None) -> None:
        self.settings = settings
        self._shared = shared  # several replicas: the callback may reach another one than start()
        self._config: dict[str, Any] | None = None
        self._pending: dict[str, tuple[float, str, str, str]] = {}  # state -> (at, nonce, verifier, next)
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        verify: Any = str(self.settings.ca_cert) if self.settings.ca_cert else True
        return httpx.Client(timeout=15, verify=verify)

    def config(self) -> dict[str, Any]:
        if self._config is None:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                with self._http() as http:
                    found = http.get(url).raise_for_status().json()
            except Exception as exc:
                raise OidcError(f"the identity provider cannot be reached ({type(exc).__name__})") from None
            if found.get("issuer", "").rstrip("/") != self.settings.issuer.rstrip("/"):
                raise OidcError("the identity provider names another issuer than auth.oidc.issuer")
            self._config = found
        return self._config

    def start(self, next_path: str) -> tuple[str, str]:
        """The provider's authorization URL and the state to bind to the browser."""
        from urllib.parse import urlencode

        config = self.config()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        now = time.monotonic()
        if self._shared is not None:
            self._shared.put_sign_in(state, nonce, verifier, safe_next(next_path))
        else:
            with self._lock:
                self._pending = {k: v for k, v in self._pending.items() if v[0] > now - PENDING_S}
                self._pending[state] = (now, nonce, verifier, safe_next(next_path))
        query = {"response_type": "code", "client_id": self.settings.client_id, "scope": " ".join(self.settings.scopes),
                 "redirect_uri": self.settings.redirect_url, "state": state, "nonce": nonce,
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        return f"{config['authorization_endpoint']}?{urlencode(query)}", state

    def finish(self, state: str, code: str) -> tuple[dict[str, Any], str]:
        """The verified ID-token claims and the page to go to."""
        import jwt

        if self._shared is not None:
            taken = self._shared.pop_sign_in(state, PENDING_S)
        else:
            with self._lock:
                pending = self._pending.pop(state, None)
            fresh = pending is not None and pending[0] >= time.monotonic() - PENDING_S
            taken = pending[1:] if pending is not None and fresh else None
        if taken is None:
            raise OidcError("this sign-in expired or was already used: please sign in again")
        nonce, verifier, next_path = taken
        config = self.config()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_url,
                "code_verifier": verifier, "client_id": self.settings.client_id}
        secret = self.settings.client_secret.get_secret_value()
        try:
            with self._http() as http:
                tokens = http.post(config["token_endpoint"], data=form, auth=(self.settings.client_id, secret))
                if tokens.status_code != 200:
                    raise OidcError(f"the identity provider refused the sign-in ({tokens.status_code})")
                id_token = tokens.json().get("id_token")
                keys = http.get(config["jwks_uri"]).raise_for_status().json()
        except OidcError:
            raise
        except Exception as exc:
            raise OidcError(f"the identity provider cannot be reached ({type(exc).__name__})") from None
        if not id_token:
            raise OidcError("the identity provider sent no ID token")
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            jwks = jwt.PyJWKSet.from_dict(keys)
            key = next((k for k in jwks.keys if kid is None or k.key_id == kid), None)
            if key is None:
                raise OidcError("the ID token is signed with a key the provider does not list")
            claims: dict[str, Any] = jwt.decode(
                id_token, key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.settings.client_id, issuer=config["issuer"],
                options={"require": ["exp", "iat", "iss", "aud"]}, leeway=60)
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("the ID token does not belong to this sign-in (nonce)")
        return claims, next_path


def user_of(claims: dict[str, Any], settings: OidcSettings) -> tuple[str, list[str], bool]:
    name = claims.get(settings.username_claim)
    if not name and claims.get("email_verified") is True:  # an unverified address could be anyone's
        name = claims.get("email")
    if not name:
        raise OidcError(f"the ID token has no {settings.username_claim!r} claim (auth.oidc.username_claim)")
    raw = claims.get(settings.groups_claim) or []
    groups = [str(g).lstrip("/") for g in (raw if isinstance(raw, list) else [raw])]  # Keycloak: "/hr"
    return str(name), groups, bool(settings.admin_group and settings.admin_group in groups)


def _client(state: AppState) -> OidcClient:
    oidc = state.services.settings.auth.oidc
    if oidc is None:
        from appliance.api.errors import ApiError

        raise ApiError(404, "sign-in with an identity provider is not configured (auth.oidc)")
    if state.oidc is None:
        state.oidc = OidcClient(oidc, state.services.shared_state)
    return state.oidc


@router.get("/auth/oidc/login")
def oidc_login(request: Request, next: str = "/") -> Response:
    state: AppState = request.app.state.appliance
    client = _client(state)
    try:
        url, bind = client.start(next)
    except OidcError as exc:
        return login_page(state, next, str(exc), status=502)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(STATE_COOKIE, bind, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        max_age=PENDING_S, path="/auth/oidc/")
    return response


@router.get("/auth/oidc/callback")
def oidc_callback(request: Request, state: str = "", code: str = "", error: str = "") -> Response:
    from appliance.access.auth import AuthError

    app_state: AppState = request.app.state.appliance
    services = app_state.services
    client = _client(app_state)
    where = request.client.host if request.client else "?"
    if error:
        services.audit.record("sign_in", "?", outcome="failed", method="oidc", reason=error[:200], client=where)
        return login_page(app_state, "/", f"The identity provider refused the sign-in: {error[:200]}", status=401)
    bound = request.cookies.get(STATE_COOKIE, "")
    if not state or not bound or not secrets.compare_digest(bound.encode(), state.encode()):
        return login_page(app_state, "/", "This sign-in did not start in this browser: please sign in again.",
                          status=400)
    try:
        claims, next_path = client.finish(state, code)
        name, groups, admin = user_of(claims, client.settings)
        user = services.users.upsert_external(name, groups, admin)
    except (OidcError, AuthError) as exc:
        services.audit.record("sign_in", "?", outcome="failed", method="oidc", reason=str(exc), client=where)
        return login_page(app_state, "/", str(exc), status=401)
    services.audit.record("sign_in", user.name, outcome="ok", method="oidc", groups=user.groups, client=where)
    response = RedirectResponse(next_path, status_code=303)
    start_session(request, app_state, user.name, response)
    response.delete_cookie(STATE_COOKIE, path="/auth/oidc/")
    return response
