"""The request guard on a loopback server with no users (the machine's own operator): open to that
operator, closed to other sites' pages (CSRF) and to DNS rebinding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.access.auth import AuthError, Users


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(overrides={"data_dir": tmp_path / "data"}))
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as c:
        yield c
    services.close()


def test_the_local_operator_is_served_without_sign_in(client: Any) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/conversations").json() == {"conversations": []}


def test_another_sites_page_cannot_write_as_the_local_operator(client: Any) -> None:
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
        r = client.post("/v1/search", json={"query": "salaries"}, headers=headers)
        assert r.status_code == 403, headers
        assert "refused" in r.json()["error"]["message"]
        assert client.post("/v1/admin/acl/apply", headers=headers).status_code == 403


def test_dns_rebinding_is_refused(client: Any) -> None:
    r = client.get("/v1/models", headers={"host": "attacker.example:7860"})
    assert r.status_code == 421
    assert client.get("/v1/models", headers={"host": "localhost:7860"}).status_code == 200


def test_a_host_that_merely_starts_like_loopback_is_refused(client: Any) -> None:
    """Issue 17, finding 4: `127.0.0.1.rebind.attacker.example` (with a matching Origin) searched and
    uploaded as the local operator, and an empty Host passed. Loopback names now match exactly."""
    for host in ("127.0.0.1.rebind.attacker.example", "127.0.0.1.rebind.attacker.example:7860", "", "127.evil",
                 "localhost.attacker.example", "0127.0.0.1", "[::1].example", "127.0.0.1:7860@evil.example"):
        origin = {"origin": f"http://{host}"} if host else {}
        r = client.post("/v1/search", json={"query": "salaries"}, headers={"host": host, **origin})
        assert r.status_code == 421, (host, r.status_code)
        assert client.get("/v1/models", headers={"host": host}).status_code == 421, host
    for host in ("127.0.0.1", "127.0.0.1:7860", "127.1.2.3:80", "localhost", "LOCALHOST:7860", "[::1]:7860"):
        assert client.get("/v1/models", headers={"host": host}).status_code == 200, host


def test_reserved_and_removed_names_are_never_given(tmp_path: Path) -> None:
    users = Users(tmp_path / "users.sqlite")
    for name in ("server.json", "local"):
        with pytest.raises(AuthError, match="reserved"):
            users.add(name, "Tulip-Harbor-9921")
        with pytest.raises(AuthError, match="reserved"):
            users.upsert_external(name, [], False, "https://sso.example", "s-1")
    users.add("gina", "Tulip-Harbor-9921")
    users.remove("gina")
    with pytest.raises(AuthError, match="removed user"):
        users.add("gina", "Tulip-Harbor-9921")
    with pytest.raises(AuthError, match="removed user"):
        users.upsert_external("gina", ["hr"], False, "https://sso.example", "s-1")
