"""Sign-in with the company's OpenID Connect provider: authorization code flow with PKCE.

The provider is on the company's network (Keycloak, Entra ID, ADFS, Okta...), so nothing here leaves
it. The ID token's signature is checked against the provider's JWKS, with its issuer, audience (and
`azp` when it names several audiences), expiry and the nonce of this very sign-in; the `state` must
come back to the browser that started the sign-in (a cookie), so a stolen callback URL signs nobody in.

- Who: a user name is bound to the issuer and `sub` of its first sign-in (Users.upsert_external). A
  provider may give a name to someone else or rename an account; it never reassigns a `sub`.
- The audit trail: a callback is matched to a sign-in this browser started before anything is
  recorded, and the `error` the browser relays is recorded only as one of the codes RFC 6749 and
  OIDC define: an anonymous caller cannot write its own text there.
- Errors: the sign-in page says what the user can do; what went wrong (the provider's
  error_description, PyJWT's reason, a malformed discovery document or JWKS) goes to the server log
  and the audit trail.
- Keys: the JWKS is kept 10 minutes and read again when a token names a key it lacks (a rotation),
  at most once a minute.
- Groups: from the ID token, or from userinfo when the token has none (or only Entra's overage
  marker), once userinfo's `sub` is the token's.
- Sign-out: when the provider has an end_session_endpoint, signing out here goes on to sign out
  there (RP-initiated logout), with the session's ID token as hint: the URL is kept with the session.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from appliance.api.signin import login_page, safe_next, start_session

if TYPE_CHECKING:
    from appliance.access.shared_state import SharedState
    from appliance.api.state import AppState
    from appliance.settings import OidcSettings

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
STATE_COOKIE = "appliance_oidc_state"
PENDING_S = 600  # a sign-in must come back within 10 minutes
JWKS_TTL_S = 600.0  # the provider's keys are read again every 10 minutes, not at each sign-in
JWKS_RETRY_S = 60.0  # a token signed with a key not in the cache reads them again, at most once a minute
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")  # no sign-in works without them
OPTIONAL_ENDPOINTS = ("userinfo_endpoint", "end_session_endpoint")
# RFC 6749 4.1.2.1 and OIDC Core 3.1.2.6: every `error` a provider may send to the callback.
ERROR_CODES = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type", "invalid_scope",
    "server_error", "temporarily_unavailable", "interaction_required", "login_required",
    "account_selection_required", "consent_required", "invalid_request_uri", "invalid_request_object",
    "request_not_supported", "request_uri_not_supported", "registration_not_supported"})

UNREACHABLE = "The identity provider cannot be reached at the moment: try again later, or tell the administrator."
BROKEN = ("Sign-in with the identity provider does not work at the moment: tell the administrator (the server log "
          "says why).")
REFUSED = "The identity provider refused the sign-in: please sign in again, and tell the administrator if it persists."
INVALID = ("The identity provider's answer is not valid for this server: please sign in again, and tell the "
           "administrator if it persists.")


class OidcError(Exception):
    """The provider or its answer is not usable: str() is for the sign-in page, `detail` for the server log
    and the audit trail."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail
        self.status = 502 if message in (UNREACHABLE, BROKEN) else 401  # the provider's fault, or this answer's


@dataclass(frozen=True)
class Pending:
    """A sign-in this server started: what its callback is checked against."""

    nonce: str
    verifier: str
    next_path: str


@dataclass(frozen=True)
class SignedIn:
    claims: dict[str, Any]  # verified, with groups from userinfo where the ID token had none
    id_token: str  # the hint of the provider's sign-out
    next_path: str


class OidcClient:
    def __init__(self, settings: OidcSettings, shared: SharedState | None = None) -> None:
        self.settings = settings
        self._shared = shared  # several replicas: the callback may reach another one than start()
        self._config: dict[str, Any] | None = None
        self._pending: dict[str, tuple[float, str, str, str]] = {}  # state -> (at, nonce, verifier, next)
        self._jwks: Any = None  # jwt.PyJWKSet
        self._jwks_at = -math.inf  # time.monotonic() of the last read
        self._jwks_retried_at = -math.inf  # of the last read for a key the cache lacked
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        verify: Any = str(self.settings.ca_cert) if self.settings.ca_cert else True
        return httpx.Client(timeout=15, verify=verify)

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[int, Any]:
        """(HTTP status, JSON body or None) of one request to the provider."""
        try:
            with self._http() as http:
                answer = http.request(method, url, **kwargs)
        except Exception as exc:  # httpx's errors, an unreadable CA bundle...
            raise OidcError(UNREACHABLE, f"{what} ({url}): {type(exc).__name__}: {exc}") from None
        try:
            return answer.status_code, answer.json()
        except ValueError:  # not JSON, or not UTF-8
            return answer.status_code, None

    def config(self) -> dict[str, Any]:
        """The provider's discovery document, read once and checked."""
        if self._config is None:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            status, found = self._call("GET", url, "discovery")
            if status != 200:
                raise OidcError(UNREACHABLE, f"discovery ({url}) answered HTTP {status}")
            self._config = _checked_config(found, self.settings.issuer, url)
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
        return f"{_with_query(config['authorization_endpoint'], urlencode(query))}", state

    def take(self, state: str) -> Pending | None:
        """The sign-in `state` names, once, when it started here within PENDING_S."""
        if self._shared is not None:
            taken = self._shared.pop_sign_in(state, PENDING_S)
        else:
            with self._lock:
                pending = self._pending.pop(state, None)
            fresh = pending is not None and pending[0] >= time.monotonic() - PENDING_S
            taken = pending[1:] if pending is not None and fresh else None
        return None if taken is None else Pending(*taken)

    def finish(self, pending: Pending, code: str) -> SignedIn:
        """The code exchanged at the provider for a verified ID token (and groups from userinfo if need be)."""
        config = self.config()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_url,
                "code_verifier": pending.verifier, "client_id": self.settings.client_id}
        secret = self.settings.client_secret.get_secret_value()
        status, body = self._call("POST", config["token_endpoint"], "token endpoint", data=form,
                                  auth=(self.settings.client_id, secret))
        if status != 200:
            said = body if isinstance(body, dict) else {}
            raise OidcError(REFUSED, f"the token endpoint answered HTTP {status}: "
                            f"{_text(said.get('error'))} {_text(said.get('error_description'))}".rstrip(": "))
        if not isinstance(body, dict):
            raise OidcError(INVALID, "the token endpoint's answer is not a JSON object")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError(INVALID, "the token endpoint sent no ID token (is 'openid' in auth.oidc.scopes?)")
        claims = self._verified(id_token, config, pending.nonce)
        wanted = self.settings.groups_claim
        overage = claims.get("_claim_names")  # Entra ID: too many groups to list, "ask elsewhere"
        if (wanted not in claims or (isinstance(overage, dict) and wanted in overage)) and \
                "userinfo_endpoint" in config:
            info = self._userinfo(config["userinfo_endpoint"], body.get("access_token"), claims["sub"])
            if wanted in info:
                claims[wanted] = info[wanted]
            else:
                log.info("neither the ID token nor userinfo of %r carry %r: signed in without groups",
                         claims["sub"], wanted)
        return SignedIn(claims, id_token, pending.next_path)

    def _verified(self, id_token: str, config: dict[str, Any], nonce: str) -> dict[str, Any]:
        import jwt

        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
        except jwt.PyJWTError as exc:
            raise OidcError(INVALID, f"the ID token cannot be read: {exc}") from None
        key = self._signing_key(None if kid is None else str(kid))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key, algorithms=ALGORITHMS, audience=self.settings.client_id, issuer=config["issuer"],
                options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=60)
        except jwt.PyJWTError as exc:
            raise OidcError(INVALID, f"the ID token is not valid: {type(exc).__name__}: {exc}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        # OIDC Core 3.1.3.7: a token for several audiences counts only if it was issued to us.
        if (len(audiences) > 1 or azp is not None) and azp != self.settings.client_id:
            raise OidcError(INVALID, f"the ID token is for the audiences {audiences} and its authorised party "
                            f"(azp) is {azp!r}, not auth.oidc.client_id")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise OidcError(INVALID, "the ID token's sub is not a string")
        if not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError(INVALID, "the ID token does not belong to this sign-in (nonce)")
        return claims

    def _signing_key(self, kid: str | None) -> Any:
        """The provider's key named `kid`: from the cache, or read again when the cache lacks it (a rotation)."""
        now = time.monotonic()
        with self._lock:
            keys, stale = self._jwks, now - self._jwks_at >= JWKS_TTL_S
        if keys is None or stale:
            keys = self._read_jwks()
        key = _key_of(keys, kid)
        if key is None and not stale and self._may_read_again(now):
            key = _key_of(self._read_jwks(), kid)
        if key is None and kid is None:
            raise OidcError(INVALID, "the ID token names no key (kid), and the provider's JWKS has several")
        if key is None:
            raise OidcError(INVALID, f"the ID token is signed with the key {kid!r}, which the provider's JWKS lacks")
        return key

    def _may_read_again(self, now: float) -> bool:
        with self._lock:
            if now - self._jwks_retried_at < JWKS_RETRY_S:
                return False
            self._jwks_retried_at = now
            return True

    def _read_jwks(self) -> Any:
        import jwt

        url = self.config()["jwks_uri"]
        status, found = self._call("GET", url, "JWKS")
        if status != 200:
            raise OidcError(UNREACHABLE, f"the JWKS ({url}) answered HTTP {status}")
        if not isinstance(found, dict) or not isinstance(found.get("keys"), list):
            raise OidcError(BROKEN, f"the JWKS ({url}) is not a JSON object with a list of keys")
        try:
            keys = jwt.PyJWKSet.from_dict(found)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise OidcError(BROKEN, f"the JWKS ({url}) has no usable key: {exc}") from None
        with self._lock:
            self._jwks, self._jwks_at = keys, time.monotonic()
        return keys

    def _userinfo(self, url: str, access_token: Any, sub: str) -> dict[str, Any]:
        if not isinstance(access_token, str) or not access_token:
            raise OidcError(INVALID, "the token endpoint sent no access token, which reading userinfo needs")
        status, info = self._call("GET", url, "userinfo", headers={"authorization": f"Bearer {access_token}",
                                                                   "accept": "application/json"})
        if status != 200:
            raise OidcError(REFUSED, f"userinfo ({url}) answered HTTP {status}")
        if not isinstance(info, dict):
            raise OidcError(BROKEN, f"userinfo ({url}) is not a JSON object (signed answers are not supported)")
        # OIDC Core 5.3.2: without this, the answer could be about another user (token substitution).
        if info.get("sub") != sub:
            raise OidcError(INVALID, f"userinfo ({url}) is about sub {_text(info.get('sub'))!r}, not the ID "
                            f"token's {sub!r}")
        return info

    def end_session_url(self, id_token: str) -> str | None:
        """Where the browser signs out at the provider too; None when it offers no end_session_endpoint."""
        from urllib.parse import urlencode, urljoin

        try:
            endpoint = self.config().get("end_session_endpoint")
        except OidcError as exc:
            log.warning("signed out here only: %s", exc.detail)
            return None
        if endpoint is None:
            return None
        back = urljoin(self.settings.redirect_url, "/login")  # the provider must know it as a post-logout URI
        return _with_query(endpoint, urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": back,
                                                "client_id": self.settings.client_id}))


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _checked_config(found: Any, issuer: str, url: str) -> dict[str, Any]:
    """What the appliance uses of a discovery document, or OidcError saying what it lacks."""
    if not isinstance(found, dict):
        raise OidcError(BROKEN, f"the discovery document ({url}) is not a JSON object")
    if str(found.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise OidcError(BROKEN, f"the discovery document ({url}) names the issuer {_text(found.get('issuer'))!r}, "
                        f"not auth.oidc.issuer {issuer!r}")
    missing = [k for k in ENDPOINTS if not _is_url(found.get(k))]
    if missing:
        raise OidcError(BROKEN, f"the discovery document ({url}) has no {', '.join(missing)} (an http(s) URL each)")
    return {"issuer": found["issuer"], **{k: found[k] for k in ENDPOINTS},
            **{k: found[k] for k in OPTIONAL_ENDPOINTS if _is_url(found.get(k))}}


def _key_of(keys: Any, kid: str | None) -> Any:
    signing = [k for k in keys.keys if k.public_key_use in (None, "sig")]
    if kid is None:  # allowed when the provider has a single key
        return signing[0] if len(signing) == 1 else None
    return next((k for k in signing if k.key_id == kid), None)


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _text(value: Any, limit: int = 300) -> str:
    """A provider's field for a log line: printable, bounded."""
    return "" if value is None else "".join(c for c in str(value)[:limit] if c.isprintable())


def _fingerprint(value: str) -> str:
    """What is logged of text an anonymous caller sent: its length and a hash, never the text."""
    return f"{len(value)} characters, sha256 {hashlib.sha256(value.encode('utf-8', 'replace')).hexdigest()[:16]}"


def user_of(claims: dict[str, Any], settings: OidcSettings) -> tuple[str, list[str], bool]:
    name = claims.get(settings.username_claim)
    if not name and claims.get("email_verified") is True:  # an unverified address could be anyone's
        name = claims.get("email")
    if not name:
        raise OidcError(INVALID, f"the ID token has no {settings.username_claim!r} claim (auth.oidc.username_claim)")
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
        log.warning("OIDC sign-in cannot start: %s", exc.detail)
        return login_page(state, next, str(exc), status=502)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(STATE_COOKIE, bind, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        max_age=PENDING_S, path="/auth/oidc/")
    return response


def _refusal(error: str) -> str:
    """What the user is told when the provider sends them back with an error."""
    if error == "access_denied":
        return "The identity provider did not let you in (access denied): ask the administrator if you need access."
    if error in ("login_required", "interaction_required", "consent_required", "account_selection_required"):
        return "The identity provider needs you to sign in there first: please sign in again."
    return REFUSED


@router.get("/auth/oidc/callback")
def oidc_callback(request: Request, state: str = "", code: str = "", error: str = "") -> Response:
    from appliance.access.auth import AuthError

    app_state: AppState = request.app.state.appliance
    services = app_state.services
    client = _client(app_state)
    where = request.client.host if request.client else "?"
    bound = request.cookies.get(STATE_COOKIE, "")
    # Nothing is recorded until the callback matches a sign-in this browser started: anyone can send one.
    if not state or not bound or not secrets.compare_digest(bound.encode(), state.encode()):
        log.info("OIDC callback from %s not bound to its browser, ignored (error: %s)", where, _fingerprint(error))
        return login_page(app_state, "/", "This sign-in did not start in this browser: please sign in again.",
                          status=400)
    pending = client.take(state)
    if pending is None:
        log.info("OIDC callback from %s for no pending sign-in, ignored (error: %s)", where, _fingerprint(error))
        expired = login_page(app_state, "/", "This sign-in expired or was already used: please sign in again.",
                             status=400)
        expired.delete_cookie(STATE_COOKIE, path="/auth/oidc/")
        return expired
    if error:
        # Relayed by the browser, so anything: only a code the standards define is recorded.
        said = error if error in ERROR_CODES else f"an unknown error ({_fingerprint(error)})"
        services.audit.record("sign_in", "?", outcome="failed", method="oidc",
                              reason=f"the identity provider answered {said}", client=where)
        return login_page(app_state, pending.next_path, _refusal(error), status=401)
    name, claims = "?", None
    try:
        signed = client.finish(pending, code)
        claims = signed.claims
        name, groups, admin = user_of(claims, client.settings)
        user = services.users.upsert_external(name, groups, admin, str(claims["iss"]), str(claims["sub"]))
    except OidcError as exc:
        log.warning("OIDC sign-in from %s failed: %s", where, exc.detail)
        services.audit.record("sign_in", name, outcome="failed", method="oidc", reason=exc.detail, client=where)
        return login_page(app_state, pending.next_path, str(exc), status=exc.status)
    except AuthError as exc:
        # The provider vouched for this name and subject: record them, so an administrator can act.
        assert claims is not None
        services.audit.record("sign_in", name, outcome="refused", method="oidc", reason=str(exc),
                              issuer=str(claims["iss"]), subject=str(claims["sub"]), client=where)
        return login_page(app_state, pending.next_path, str(exc), status=401)
    services.audit.record("sign_in", user.name, outcome="ok", method="oidc", groups=user.groups,
                          subject=str(claims["sub"]), client=where)
    response = RedirectResponse(signed.next_path, status_code=303)
    # Where the browser signs out at the provider too: kept with the session, so any replica, after any
    # restart, can send it there.
    start_session(request, app_state, user.name, response, client.end_session_url(signed.id_token))
    response.delete_cookie(STATE_COOKIE, path="/auth/oidc/")
    return response
