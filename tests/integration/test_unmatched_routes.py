"""A /v1 path no route takes answers JSON: 405 when the path exists for another method (in any of the
app's routers, however FastAPI keeps them), 404 otherwise; on fakes, in-process."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import water_memo_services


def test_a_wrong_method_is_405_and_an_unknown_path_404(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    services, _ = water_memo_services(tmp_path)
    try:
        client = TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860")
        for method, path in (("DELETE", "/v1/models"), ("GET", "/v1/messages"), ("GET", "/v1/embeddings"),
                             ("PUT", "/v1/search"), ("GET", "/v1/admin/ask")):
            r = client.request(method, path)
            assert r.status_code == 405, (method, path, r.text)
        for method, path in (("GET", "/v1/nothing"), ("POST", "/v1/models/x/y")):
            r = client.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["message"].startswith("no such endpoint")
    finally:
        services.close()
