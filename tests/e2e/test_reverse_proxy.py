"""The appliance behind a TLS reverse proxy, as shipped: Debian's nginx runs deploy/nginx/appliance.conf in
front of a real `appliance serve` that trusts it (server.trusted_proxies). Through the proxy, sign-in works
with a Secure cookie and HSTS, and the audit trail records the address nginx saw. A forged
X-Forwarded-For changes nothing, whether sent past the proxy, through it, or to a server that trusts no
proxy (uvicorn's own default would believe one from 127.0.0.1): the sign-in throttle counts the real
address and the audit trail names it. Clients bind distinct loopback addresses (127.0.0.2...) so each
address recorded is told apart from the proxy's own 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from appliance.settings import AuthSettings, IngestSettings, ServerSettings, load_settings
from tests.conftest import ROOT, make_services
from tests.support.nginx import nginx, nginx_binary, self_signed, shipped_conf
from tests.support.servers import appliance_server, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (apt-get install nginx; "
                       "scripts/setup.sh test installs it as root)"),
]
CLI = [sys.executable, "-m", "appliance.cli"]
PASSWORD = "Lantern-Orchid-6620"
SITE = "rag.example.test"  # the name employees type; Host carries it through the proxy
ATTEMPTS = AuthSettings().sign_in_attempts
DEPLOY = ROOT / "deploy"


@dataclass
class Appliance:
    url: str  # straight to `appliance serve`, on 127.0.0.1
    data: Path
    log: Path

    def audit(self, event: str = "sign_in") -> list[dict[str, Any]]:
        lines = []
        for path in sorted((self.data / "audit").glob("audit*.jsonl")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [entry for entry in lines if entry["event"] == event]

    def token(self) -> str:
        return str(json.loads((self.data / "server.json").read_text())["token"])


@dataclass
class Proxy:
    url: str  # https://127.0.0.1:PORT, nginx's TLS port
    http_url: str  # its plain-HTTP port, which only redirects
    cert: Path

    def client(self, source: str, **headers: str) -> httpx.Client:
        """A client of the proxy connecting from `source`, asking for the site by name (Host), as a browser."""
        port = self.url.rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=str(self.cert))
        transport = httpx.HTTPTransport(local_address=source, verify=context)
        return httpx.Client(base_url=self.url, transport=transport, timeout=60, follow_redirects=False,
                            headers={"host": f"{SITE}:{port}", "origin": f"https://{SITE}:{port}", **headers})


def direct(appliance: Appliance, source: str, **headers: str) -> httpx.Client:
    """A client of the appliance itself, connecting from `source` (past any proxy)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=appliance.url, transport=transport, timeout=60, follow_redirects=False,
                        headers={"origin": appliance.url, **headers})


def sign_in(client: httpx.Client, name: str, password: str, **headers: str) -> httpx.Response:
    page = client.get("/login", headers=headers)
    assert page.status_code == 200, page.text[:300]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client.post("/login", headers=headers,
                       data={"username": name, "password": password, "csrf": csrf.group(1), "next": "/"})


def _start(root: Path, env: dict[str, str]) -> Iterator[Appliance]:
    data = root / "data"
    add = subprocess.run([*CLI, "users", "add", "alice", "--admin", "--password-stdin", "--data-dir", str(data)],
                         cwd=ROOT, capture_output=True, text=True, input=PASSWORD + "\n", timeout=300)
    assert add.returncode == 0, add.stderr
    site = Appliance("", data, root / "serve.log")
    with appliance_server(data, site.log, {"APPLIANCE_LLM__MAX_ANSWER_TOKENS": "48", **env}) as (url, _pid):
        site.url = url
        yield site
    log = site.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """`appliance serve` on 127.0.0.1 that trusts the proxy at 127.0.0.1, with one user."""
    yield from _start(tmp_path_factory.mktemp("trusting"), {"APPLIANCE_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]'})


@pytest.fixture(scope="module")
def proxy(trusting: Appliance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("nginx")
    cert, _key = self_signed(root / "tls", [SITE], ["127.0.0.1"])
    https_port, http_port = free_port(), free_port()
    conf = shipped_conf(trusting.url.removeprefix("http://"), https_port, http_port, root / "tls")
    with nginx(conf, root / "nginx", [https_port, http_port]):
        yield Proxy(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", cert)


@pytest.fixture(scope="module")
def trusting_none(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """`appliance serve` with the default settings: no trusted proxy."""
    yield from _start(tmp_path_factory.mktemp("default"), {})


def test_signing_in_through_the_proxy_gives_a_secure_cookie_hsts_and_the_address_nginx_saw(
        proxy: Proxy, trusting: Appliance) -> None:
    with proxy.client("127.0.0.2") as browser:
        r = sign_in(browser, "alice", PASSWORD)
        assert r.status_code == 303, r.text[:300]
        (cookie,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("appliance_session=")]
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax"} <= attributes, cookie  # X-Forwarded-Proto: https believed
        assert r.headers["strict-transport-security"] == "max-age=63072000"
        page = browser.get("/", headers={"accept": "text/html"})
        # The site's own name in Host (not a loopback name) is fine behind a trusted proxy: no 421.
        assert page.status_code == 200, page.text[:300]
        assert page.headers["strict-transport-security"] == "max-age=63072000"
        assert page.headers["x-frame-options"] == "DENY"  # the appliance's own headers pass through
    (ok,) = [e for e in trusting.audit() if e.get("outcome") == "ok"]
    assert (ok["actor"], ok["client"]) == ("alice", "127.0.0.2")
    plain = httpx.get(proxy.http_url + "/login", headers={"host": SITE})
    assert plain.status_code == 308
    assert plain.headers["location"] == f"https://{SITE}/login"


def _forge_failures(client: httpx.Client, prefix: str, **headers: str) -> list[str]:
    """ATTEMPTS failed sign-ins under new user names, each claiming another address; the addresses claimed."""
    claimed = []
    for i in range(ATTEMPTS):
        forged = f"10.9.{len(prefix)}.{i + 1}"  # a new address each time
        claimed.append(forged)
        r = sign_in(client, f"{prefix}{i}", "not-the-password", **{"x-forwarded-for": forged, **headers})
        assert r.status_code == 401, r.text[:300]
    return claimed


def _locked_out(client: httpx.Client, **headers: str) -> None:
    r = sign_in(client, "alice", PASSWORD, **{"x-forwarded-for": "10.9.9.9", **headers})
    assert r.status_code == 429, r.text[:300]  # the right password, from an address that failed too often
    assert "Too many failed attempts" in r.text


def _forged_run(appliance: Appliance, client: httpx.Client, prefix: str, **headers: str) -> set[str]:
    """ATTEMPTS forged failures, then the lock-out; the client addresses the audit trail recorded for them."""
    before = len(appliance.audit())
    claimed = _forge_failures(client, prefix, **headers)
    _locked_out(client)
    run = appliance.audit()[before:]
    assert [e["outcome"] for e in run] == ["failed"] * ATTEMPTS + ["refused"], run
    assert not {e["client"] for e in appliance.audit()} & set(claimed)
    return {e["client"] for e in run}


def test_a_forged_forwarded_for_sent_past_the_proxy_is_ignored(trusting: Appliance) -> None:
    # 127.0.0.4 is not a trusted proxy: its X-Forwarded-For and X-Forwarded-Proto count for nothing.
    with direct(trusting, "127.0.0.4") as attacker:
        assert _forged_run(trusting, attacker, "past", **{"x-forwarded-proto": "https"}) == {"127.0.0.4"}


# From 127.0.0.1, the proxy's own (trusted) address, appending to the client's X-Forwarded-For
# ($proxy_add_x_forwarded_for) would let the forged address through: the shipped file replaces it.
@pytest.mark.parametrize("source", ["127.0.0.5", "127.0.0.1"])
def test_a_forwarded_for_sent_through_the_proxy_is_replaced_by_the_address_nginx_saw(
        source: str, proxy: Proxy, trusting: Appliance) -> None:
    with proxy.client(source) as attacker:
        assert _forged_run(trusting, attacker, f"through-{source}") == {source}


def test_without_trusted_proxies_nobody_names_an_address_not_even_loopback(trusting_none: Appliance) -> None:
    # uvicorn's default would believe these headers from 127.0.0.1; the appliance's default believes no one.
    with direct(trusting_none, "127.0.0.1") as attacker:
        assert _forged_run(trusting_none, attacker, "default", **{"x-forwarded-proto": "https"}) == {"127.0.0.1"}
    with direct(trusting_none, "127.0.0.6") as client:
        r = sign_in(client, "alice", PASSWORD, **{"x-forwarded-proto": "https", "x-forwarded-for": "10.9.9.9"})
        assert r.status_code == 303, r.text[:300]
        (cookie,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("appliance_session=")]
        assert "secure" not in cookie.lower()  # plain HTTP, whatever the header says
    assert trusting_none.audit()[-1]["client"] == "127.0.0.6"


def test_a_relayed_request_never_counts_as_this_machine(proxy: Proxy, trusting: Appliance) -> None:
    # The server.json token (handing an ingest job to the server) is honoured from this machine only.
    bearer = {"authorization": f"Bearer {trusting.token()}"}
    with direct(trusting, "127.0.0.1") as local:
        r = local.post("/v1/admin/ingest/cancel", headers=bearer)
        assert r.status_code == 200, r.text
        assert r.json() == {"cancelled": False}
        # The trusted proxy relaying a client it saw on loopback (or a proxy trusted as a whole network
        # relaying a client that forged 127.0.0.1): still not this machine.
        r = local.post("/v1/admin/ingest/cancel", headers={**bearer, "x-forwarded-for": "127.0.0.1"})
        assert r.status_code == 401, r.text
    with proxy.client("127.0.0.2") as relayed:  # through nginx, from this very machine
        r = relayed.post("/v1/admin/ingest/cancel", headers=bearer)
        assert r.status_code == 401, r.text


def test_behind_a_proxy_sign_in_is_required_even_before_any_user_exists(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", server={"trusted_proxies": ["127.0.0.1"]})
    assert services.users.count() == 0
    assert services.auth_required()  # no anonymous "local operator" for whoever the proxy serves
    assert services.settings.server.api_key_required
    assert not make_services(tmp_path / "other").auth_required()  # loopback, no user: the local operator
    assert ServerSettings(trusted_proxies=["10.244.0.0/16", "::1"]).trusted_proxies == ["10.244.0.0/16", "::1"]
    for wrong in ("10.244.0.1/16", "proxy.internal", "*"):
        with pytest.raises(ValueError, match="trusted_proxies"):
            ServerSettings(trusted_proxies=[wrong])


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return data


@pytest.mark.parametrize(("name", "config"), [("compose.yaml", "appliance.yaml"),
                                              ("compose.vllm.yaml", "appliance.vllm.yaml")])
def test_the_stacks_serve_the_appliance_only_through_the_proxy(name: str, config: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    compose = _compose(name)
    services = compose["services"]
    assert "ports" not in services["appliance"]  # reachable only through nginx
    proxy = services["nginx"]
    assert [p.rsplit(":", 1)[1] for p in proxy["ports"]] == ["443", "80"]
    assert "./nginx/appliance.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert proxy["depends_on"] == {"appliance": {"condition": "service_healthy"}}
    (address,) = [net["ipv4_address"] for net in proxy["networks"].values()]
    for var in [v for v in os.environ if v.startswith("APPLIANCE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("APPLIANCE_STORE__API_KEY", "test-only-key")
    settings = load_settings(DEPLOY / config)
    assert settings.server.trusted_proxies == [address]  # the proxy, and only it
    subnets = [c["subnet"] for net in compose["networks"].values() for c in net.get("ipam", {}).get("config", [])]
    assert len(subnets) == 1
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnets[0])


def test_nginx_accepts_the_largest_upload_the_appliance_does() -> None:
    conf = (DEPLOY / "nginx" / "appliance.conf").read_text()
    (size,) = re.findall(r"client_max_body_size (\d+)m;", conf)
    limit = ServerSettings().max_upload_files * int(IngestSettings().max_file_mb) + 1  # MB, as create_app's
    assert int(size) == limit
    assert "proxy_request_buffering off;" in conf  # the appliance's 413 comes before the body is read
    assert "proxy_buffering off;" in conf  # streamed answers


def test_the_kubernetes_ingress_terminates_tls_in_front_of_the_appliance() -> None:
    base = DEPLOY / "kubernetes"
    (ingress,) = [d for d in yaml.safe_load_all((base / "ingress.yaml").read_text()) if d and d["kind"] == "Ingress"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "appliance", "port": {"name": "http"}}
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "4001m"
    settings = load_settings(base / "appliance-settings.yaml", {})
    assert settings.server.trusted_proxies  # the ingress controller's pods
    assert not settings.server.loopback_only
