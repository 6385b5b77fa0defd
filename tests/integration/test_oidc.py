"""OIDC sign-in against a real (small) identity provider on loopback: discovery, authorization code
with PKCE, an RS256 ID token checked against the provider's JWKS, groups from a claim or userinfo,
key rotation, the provider's sign-out; and the attacks of the OIDC review replayed."""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse

from tests.support.servers import free_port

CLIENT_ID, CLIENT_SECRET = "rag-appliance", "Vq7-provider-secret-Lm29xT"


@dataclass
class Provider:
    """Keycloak in miniature: what the appliance needs of a provider, checked as strictly."""

    url: str
    keys: dict[str, Any]  # kid -> private key
    claims: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # code -> (nonce, challenge, redirect)
    audience: str | list[str] = CLIENT_ID
    signing: str = "k1"  # the kid of the next ID token
    published: list[str] = field(default_factory=lambda: ["k1"])  # the kids its JWKS lists
    certs_read: int = 0
    discovery: Any = None  # replaces the discovery document (a broken provider)
    jwks: Any = None  # replaces the JWKS
    userinfo: dict[str, Any] | None = None  # None: no userinfo_endpoint
    end_session: bool = False  # whether discovery names an end_session_endpoint
    refuse: dict[str, str] | None = None  # the token endpoint's error answer
    access: dict[str, str] = field(default_factory=dict)  # access token -> sub
    issued: list[str] = field(default_factory=list)  # the ID tokens it gave

    def reset(self) -> None:
        self.claims, self.codes, self.audience, self.signing, self.published = {}, {}, CLIENT_ID, "k1", ["k1"]
        self.certs_read, self.discovery, self.jwks, self.userinfo, self.end_session = 0, None, None, None, False
        self.refuse, self.access, self.issued = None, {}, []

    def consent(self, authorize_url: str) -> tuple[str, str]:
        """The user signs in at the provider: a code for the appliance's callback, and the state."""
        q = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        assert q["client_id"] == CLIENT_ID
        assert q["code_challenge_method"] == "S256"
        assert q["response_type"] == "code"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (q["nonce"], q["code_challenge"], q["redirect_uri"])
        return code, q["state"]


def _app(provider: Provider) -> Any:
    app = FastAPI()

    def public(kid: str) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(provider.keys[kid].public_key(), as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}

    @app.get("/realms/acme/.well-known/openid-configuration")
    def discovery() -> Any:
        if provider.discovery is not None:
            return provider.discovery
        base = provider.url
        found = {"issuer": base, "authorization_endpoint": base + "/auth", "token_endpoint": base + "/token",
                 "jwks_uri": base + "/certs"}
        if provider.userinfo is not None:
            found["userinfo_endpoint"] = base + "/userinfo"
        if provider.end_session:
            found["end_session_endpoint"] = base + "/logout?ui_locales=en"
        return found

    @app.get("/realms/acme/certs")
    def certs() -> Any:
        provider.certs_read += 1
        return provider.jwks if provider.jwks is not None else {"keys": [public(k) for k in provider.published]}

    @app.post("/realms/acme/token")
    def token(request: Request, code: str = Form(), code_verifier: str = Form(), redirect_uri: str = Form(),
              grant_type: str = Form()) -> Any:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if provider.refuse is not None:
            return JSONResponse(provider.refuse, status_code=400)
        found = provider.codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if found is None or found[1] != challenge or found[2] != redirect_uri or grant_type != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": provider.url, "aud": provider.audience, "sub": "f:1234", "iat": now, "exp": now + 300,
                  "nonce": found[0], **provider.claims}
        id_token = jwt.encode(claims, provider.keys[provider.signing], algorithm="RS256",
                              headers={"kid": provider.signing})
        access = secrets.token_urlsafe(16)
        provider.access[access] = claims["sub"]
        provider.issued.append(id_token)
        return {"id_token": id_token, "token_type": "Bearer", "access_token": access}

    @app.get("/realms/acme/userinfo")
    def userinfo(request: Request) -> Any:
        sub = provider.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if sub is None or provider.userinfo is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return {"sub": sub, **provider.userinfo}

    return app


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric import rsa

    port = free_port()
    keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2")}
    found = Provider(f"http://127.0.0.1:{port}/realms/acme", keys)
    server = uvicorn.Server(uvicorn.Config(_app(found), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield found
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def appliance(provider: Provider, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    provider.reset()
    settings = load_settings(overrides={"data_dir": tmp_path / "data", "auth": {"oidc": {
        "issuer": provider.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "redirect_url": "http://127.0.0.1/auth/oidc/callback", "groups_claim": "groups",
        "admin_group": "rag-admins"}}})
    services = build_services(settings)
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1") as client:
        client.services = services  # type: ignore[attr-defined]
        yield client
    services.close()


def _sign_in(appliance: Any, provider: Provider, next_path: str = "/v1/conversations") -> Any:
    r = appliance.get("/auth/oidc/login", params={"next": next_path}, follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"].startswith(provider.url + "/auth?")
    code, state = provider.consent(r.headers["location"])
    return appliance.get("/auth/oidc/callback", params={"code": code, "state": state}, follow_redirects=False)


def _alert(r: Any) -> str:
    found = re.search(r'role="alert">(.*?)</p>', r.text, re.S)
    return html.unescape(found.group(1)) if found else ""


def _oidc_events(appliance: Any) -> list[dict[str, Any]]:
    """The trail's OIDC sign-ins, newest first."""
    return [e for e in appliance.services.audit.search(event="sign_in") if e.get("method") == "oidc"]


def _trail(appliance: Any) -> str:
    return "".join(p.read_text() for p in appliance.services.audit.files())


def test_sign_in_creates_the_user_with_the_providers_groups(appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "dana", "groups": ["/hr", "finance"]}
    assert appliance.get("/v1/conversations").status_code == 401  # an identity provider means sign-in
    r = _sign_in(appliance, provider)
    assert r.status_code == 303, _alert(r)
    assert r.headers["location"] == "/v1/conversations"
    assert appliance.cookies.get("appliance_session")
    assert appliance.get("/v1/conversations").status_code == 200
    user = appliance.services.users.get("dana")
    assert (user.source, user.groups, user.admin) == ("oidc", ["finance", "hr"], False)
    assert appliance.get("/v1/admin/audit").status_code == 403
    # Groups come fresh from the provider at each sign-in; an admin group grants administration.
    provider.claims = {"preferred_username": "dana", "groups": ["finance", "rag-admins"]}
    appliance.cookies.clear()
    assert _sign_in(appliance, provider).status_code == 303
    assert appliance.get("/v1/admin/audit").status_code == 200
    events = _oidc_events(appliance)
    assert events[0]["outcome"] == "ok"
    assert events[0]["subject"] == "f:1234"


def test_a_forged_or_replayed_sign_in_is_refused(appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "eve", "groups": []}
    r = appliance.get("/auth/oidc/login", follow_redirects=False)
    code, state = provider.consent(r.headers["location"])
    appliance.cookies.clear()  # the callback arrives in another browser (a stolen link)
    r = appliance.get("/auth/oidc/callback", params={"code": code, "state": state}, follow_redirects=False)
    assert r.status_code == 400
    assert "did not start in this browser" in r.text
    assert appliance.services.users.get("eve") is None
    # A token minted for another client is refused; PyJWT's reason goes to the trail, not the page.
    provider.audience = "another-client"
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert "not valid" in _alert(r)
    assert "Audience" not in r.text
    assert "InvalidAudienceError" in _oidc_events(appliance)[0]["reason"]
    provider.audience = CLIENT_ID
    # A local user's name cannot be taken over through the provider.
    appliance.services.users.add("frank", "Tulip-Harbor-9921")
    provider.claims = {"preferred_username": "frank"}
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert "local user" in r.text


def test_a_name_given_to_another_person_at_the_provider_does_not_open_the_earlier_account(
        appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "dana", "sub": "f:1111", "groups": ["rag-admins", "hr"]}
    assert _sign_in(appliance, provider).status_code == 303
    appliance.cookies.clear()
    # Dana leaves; the provider gives the name to a newcomer (another sub), in fewer groups.
    provider.claims = {"preferred_username": "dana", "sub": "f:2222", "groups": ["sales"]}
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert "belongs to another person" in _alert(r)
    assert "administrator" in _alert(r)
    assert not appliance.cookies.get("appliance_session")
    assert appliance.get("/v1/conversations").status_code == 401
    user = appliance.services.users.get("dana")
    assert (user.groups, user.admin) == (["hr", "rag-admins"], True)  # not rewritten by the newcomer's sign-in
    refused = _oidc_events(appliance)[0]
    assert (refused["actor"], refused["outcome"], refused["subject"]) == ("dana", "refused", "f:2222")
    assert refused["issuer"] == provider.url
    # The name's first owner still signs in.
    provider.claims = {"preferred_username": "dana", "sub": "f:1111", "groups": ["hr"]}
    assert _sign_in(appliance, provider).status_code == 303


def test_anonymous_callbacks_write_nothing_to_the_audit_trail(appliance: Any, provider: Provider,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.api.oidc")
    words = "Security notice: call 555-0100 to restore your account " * 4
    before = _trail(appliance)
    # No cookie; a cookie equal to a made-up state; a stale cookie: none reaches the trail.
    r = appliance.get("/auth/oidc/callback", params={"state": "x", "error": words}, follow_redirects=False)
    assert r.status_code == 400
    appliance.cookies.set("appliance_oidc_state", "made-up", path="/auth/oidc/")
    r = appliance.get("/auth/oidc/callback", params={"state": "made-up", "error": words, "code": "c"},
                      follow_redirects=False)
    assert r.status_code == 400
    assert "expired or was already used" in _alert(r)
    assert _trail(appliance) == before
    assert "555-0100" not in caplog.text
    # A sign-in the caller started itself: its error is recorded only as "unknown", never as its text.
    r = appliance.get("/auth/oidc/login", follow_redirects=False)
    _, state = provider.consent(r.headers["location"])
    r = appliance.get("/auth/oidc/callback", params={"state": state, "error": words}, follow_redirects=False)
    assert r.status_code == 401
    assert "555-0100" not in r.text
    assert "555-0100" not in _trail(appliance)
    assert "an unknown error (" in _oidc_events(appliance)[0]["reason"]
    # The state was taken: replaying it, with or without an error, records nothing more.
    lines = _trail(appliance).count("\n")
    r = appliance.get("/auth/oidc/callback", params={"state": state, "error": "access_denied"},
                      follow_redirects=False)
    assert r.status_code == 400
    assert _trail(appliance).count("\n") == lines
    # A standard error code is recorded and explained.
    r = appliance.get("/auth/oidc/login", follow_redirects=False)
    _, state = provider.consent(r.headers["location"])
    r = appliance.get("/auth/oidc/callback", params={"state": state, "error": "access_denied"},
                      follow_redirects=False)
    assert "access denied" in _alert(r)
    assert _oidc_events(appliance)[0]["reason"] == "the identity provider answered access_denied"


def test_provider_errors_are_explained_to_the_administrator_not_the_user(
        appliance: Any, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.api.oidc")  # whatever an earlier test set the root to
    # The token endpoint refuses: its error_description goes to the log and the trail.
    provider.refuse = {"error": "invalid_grant", "error_description": "Code not valid: session expired at the IdP"}
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert "refused the sign-in" in _alert(r)
    assert "session expired at the IdP" not in r.text
    assert "invalid_grant Code not valid: session expired at the IdP" in _oidc_events(appliance)[0]["reason"]
    assert "session expired at the IdP" in caplog.text


@pytest.mark.parametrize(("discovery", "jwks", "why"), [
    ({"issuer": "{url}", "authorization_endpoint": "{url}/auth", "jwks_uri": "{url}/certs"}, None,
     "has no token_endpoint"),
    ({"issuer": "{url}", "token_endpoint": "{url}/token"}, None, "has no authorization_endpoint, jwks_uri"),
    (["not", "an", "object"], None, "is not a JSON object"),
    (None, ["not", "an", "object"], "is not a JSON object with a list of keys"),
    (None, {"keys": "k1"}, "is not a JSON object with a list of keys"),
    (None, {"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}, 7]}, "has no usable key"),
])
def test_a_malformed_discovery_document_or_jwks_is_a_clear_error_not_a_500(
        appliance: Any, provider: Provider, caplog: pytest.LogCaptureFixture, discovery: Any, jwks: Any,
        why: str) -> None:
    caplog.set_level(logging.WARNING, logger="appliance.api.oidc")
    provider.claims = {"preferred_username": "gil"}
    if isinstance(discovery, dict):
        discovery = {k: v.format(url=provider.url) for k, v in discovery.items()}
    provider.discovery, provider.jwks = discovery, jwks
    if discovery is not None:
        r = appliance.get("/auth/oidc/login", follow_redirects=False)
    else:
        r = _sign_in(appliance, provider)
        assert why in _oidc_events(appliance)[0]["reason"]
    assert r.status_code == 502
    assert "tell the administrator" in _alert(r)
    assert why in caplog.text
    assert appliance.services.users.get("gil") is None


def test_a_key_rotation_is_followed_without_reading_the_keys_at_each_sign_in(
        appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "hana"}
    for _ in range(3):
        assert _sign_in(appliance, provider).status_code == 303
        appliance.cookies.clear()
    assert provider.certs_read == 1  # cached, not read at each callback
    # The provider rotates: new tokens are signed with k2, which the cached JWKS lacks.
    provider.signing, provider.published = "k2", ["k2"]
    r = _sign_in(appliance, provider)
    assert r.status_code == 303, _alert(r)
    assert provider.certs_read == 2
    appliance.cookies.clear()
    # A key the provider does not list reads the JWKS again at most once a minute, whatever arrives.
    provider.signing = "k1"
    for _ in range(3):
        r = _sign_in(appliance, provider)
        assert r.status_code == 401
        assert "not valid" in _alert(r)
    assert provider.certs_read == 2
    assert "'k1', which the provider's JWKS lacks" in _oidc_events(appliance)[0]["reason"]


@pytest.mark.parametrize(("azp", "signed_in"), [(None, False), ("another-client", False), (CLIENT_ID, True)])
def test_a_token_for_several_audiences_needs_azp_naming_this_client(
        appliance: Any, provider: Provider, azp: str | None, signed_in: bool) -> None:
    provider.audience = [CLIENT_ID, "another-client"]
    provider.claims = {"preferred_username": "ines", **({"azp": azp} if azp else {})}
    r = _sign_in(appliance, provider)
    assert (r.status_code == 303) == signed_in, _alert(r)
    assert (appliance.services.users.get("ines") is not None) == signed_in
    if not signed_in:
        assert "azp" in _oidc_events(appliance)[0]["reason"]


def test_groups_come_from_userinfo_when_the_id_token_has_none(appliance: Any, provider: Provider) -> None:
    provider.userinfo = {"groups": ["/finance", "rag-admins"]}
    provider.claims = {"preferred_username": "jo"}  # no groups claim
    assert _sign_in(appliance, provider).status_code == 303
    user = appliance.services.users.get("jo")
    assert (user.groups, user.admin) == (["finance", "rag-admins"], True)
    # Entra ID's overage marker: too many groups for the token, read them elsewhere.
    appliance.cookies.clear()
    provider.userinfo = {"groups": ["finance"]}
    provider.claims = {"preferred_username": "jo", "_claim_names": {"groups": "src1"},
                       "_claim_sources": {"src1": {"endpoint": "https://graph.example/getMemberObjects"}}}
    assert _sign_in(appliance, provider).status_code == 303
    assert appliance.services.users.get("jo").groups == ["finance"]
    # Groups in the token are taken as they are: userinfo is not asked.
    appliance.cookies.clear()
    provider.access.clear()  # userinfo would now refuse every token
    provider.claims = {"preferred_username": "jo", "groups": ["hr"]}
    assert _sign_in(appliance, provider).status_code == 303
    assert appliance.services.users.get("jo").groups == ["hr"]


def test_userinfo_about_another_subject_is_refused(appliance: Any, provider: Provider) -> None:
    provider.userinfo = {"groups": ["rag-admins"], "sub": "f:somebody-else"}  # another user's answer
    provider.claims = {"preferred_username": "kim"}
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert appliance.services.users.get("kim") is None
    assert "not the ID token's 'f:1234'" in _oidc_events(appliance)[0]["reason"]


def _session_csrf(appliance: Any) -> str:
    session = appliance.services.users.session(appliance.cookies.get("appliance_session"))
    assert session is not None
    return str(session.csrf)


def test_signing_out_signs_out_at_the_provider_too(appliance: Any, provider: Provider) -> None:
    provider.end_session = True
    provider.claims = {"preferred_username": "lea"}
    assert _sign_in(appliance, provider).status_code == 303
    token = appliance.cookies.get("appliance_session")
    r = appliance.post("/logout", data={"csrf": _session_csrf(appliance)}, headers={"origin": "http://127.0.0.1"},
                       follow_redirects=False)
    assert r.status_code == 200  # a page that navigates on: the page's CSP would block a redirecting form
    found = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', r.text)
    assert found is not None
    url = urlparse(html.unescape(found.group(1)))
    assert f"{url.scheme}://{url.netloc}{url.path}" == provider.url + "/logout"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q == {"ui_locales": "en", "id_token_hint": provider.issued[-1], "client_id": CLIENT_ID,
                 "post_logout_redirect_uri": "http://127.0.0.1/login"}
    assert appliance.services.users.session(token) is None
    assert appliance.get("/v1/conversations").status_code == 401
    # A password user signs out here only.
    appliance.services.users.add("nora", "Tulip-Harbor-9921")
    appliance.cookies.set("appliance_session", appliance.services.users.start_session("nora"))
    r = appliance.post("/logout", data={"csrf": _session_csrf(appliance)}, headers={"origin": "http://127.0.0.1"},
                       follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")


def test_signing_out_stays_here_when_the_provider_has_no_end_session_endpoint(
        appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "max"}
    assert _sign_in(appliance, provider).status_code == 303
    r = appliance.post("/logout", data={"csrf": _session_csrf(appliance)}, headers={"origin": "http://127.0.0.1"},
                       follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
