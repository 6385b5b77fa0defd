"""OIDC sign-in against a real (small) identity provider on loopback: discovery, authorization code
with PKCE, an RS256 ID token checked against the provider's JWKS, groups from a claim."""

from __future__ import annotations

import base64
import hashlib
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
    key: Any
    claims: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # code -> (nonce, challenge, redirect)
    audience: str = CLIENT_ID

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
    public = jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)

    @app.get("/realms/acme/.well-known/openid-configuration")
    def discovery() -> dict[str, str]:
        base = provider.url
        return {"issuer": base, "authorization_endpoint": base + "/auth", "token_endpoint": base + "/token",
                "jwks_uri": base + "/certs"}

    @app.get("/realms/acme/certs")
    def certs() -> dict[str, Any]:
        return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    @app.post("/realms/acme/token")
    def token(request: Request, code: str = Form(), code_verifier: str = Form(), redirect_uri: str = Form(),
              grant_type: str = Form()) -> Any:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        found = provider.codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if found is None or found[1] != challenge or found[2] != redirect_uri or grant_type != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": provider.url, "aud": provider.audience, "sub": "f:1234", "iat": now, "exp": now + 300,
                  "nonce": found[0], **provider.claims}
        return {"id_token": jwt.encode(claims, provider.key, algorithm="RS256", headers={"kid": "k1"}),
                "token_type": "Bearer", "access_token": "opaque"}

    return app


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric import rsa

    port = free_port()
    found = Provider(f"http://127.0.0.1:{port}/realms/acme", rsa.generate_private_key(public_exponent=65537,
                                                                                      key_size=2048))
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


def test_sign_in_creates_the_user_with_the_providers_groups(appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "dana", "groups": ["/hr", "finance"]}
    assert appliance.get("/v1/conversations").status_code == 401  # an identity provider means sign-in
    r = _sign_in(appliance, provider)
    assert r.status_code == 303, r.text[r.text.find("alert"):][:300]
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
    events = [e for e in appliance.services.audit.search(event="sign_in") if e.get("method") == "oidc"]
    assert events[0]["outcome"] == "ok"


def test_a_forged_or_replayed_sign_in_is_refused(appliance: Any, provider: Provider) -> None:
    provider.claims = {"preferred_username": "eve", "groups": []}
    r = appliance.get("/auth/oidc/login", follow_redirects=False)
    code, state = provider.consent(r.headers["location"])
    appliance.cookies.clear()  # the callback arrives in another browser (a stolen link)
    r = appliance.get("/auth/oidc/callback", params={"code": code, "state": state}, follow_redirects=False)
    assert r.status_code == 400
    assert "did not start in this browser" in r.text
    assert appliance.services.users.get("eve") is None
    # A token minted for another client is refused.
    provider.audience = "another-client"
    try:
        r = _sign_in(appliance, provider)
        assert r.status_code == 401
        assert "not valid" in r.text
    finally:
        provider.audience = CLIENT_ID
    # A local user's name cannot be taken over through the provider.
    appliance.services.users.add("frank", "Tulip-Harbor-9921")
    provider.claims = {"preferred_username": "frank"}
    r = _sign_in(appliance, provider)
    assert r.status_code == 401
    assert "local user" in r.text
