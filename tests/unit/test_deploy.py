"""deploy/: the compose stacks, the appliance image, its settings and the Ollama Modelfiles.

Read and cross-checked here (no Docker daemon or GPU needed); `docker compose config` validates the
files when a compose binary is on PATH (`apt-get install docker-compose`), and is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.settings import (
    OllamaLLMSettings,
    OpenAILLMSettings,
    QdrantServerStoreSettings,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# compose file -> (its model server, the appliance settings it mounts)
STACKS = {
    "compose.yaml": ("ollama", "appliance.yaml"),
    "compose.vllm.yaml": ("vllm", "appliance.vllm.yaml"),
}
VERSION_TAG = re.compile(r"v?\d+\.\d+\.\d+[\w.-]*")  # exact: 1.2.3, v1.2.3, 3.11.15-slim-bookworm
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SECRET_FROM_ENV = re.compile(r"\$\{QDRANT_API_KEY:\?[^}]+\}")  # required, no default value
TEST_KEY = "test-only-key"


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return data


def _services(name: str) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose(name)["services"]
    return services


def _is_pinned(ref: str) -> bool:
    name, _, digest = ref.partition("@")
    if digest:
        return DIGEST.fullmatch(digest) is not None
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return VERSION_TAG.fullmatch(tag) is not None


def _dockerfile_bases(path: Path) -> list[str]:
    bases, stages = [], set()
    for line in path.read_text().splitlines():
        m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", line.strip(), re.IGNORECASE)
        if m:
            if m[1] not in stages:
                bases.append(m[1])
            if m[2]:
                stages.add(m[2])
    return bases


def _flags(command: list[str]) -> dict[str, str]:
    """--name=value items of a command list."""
    return dict(item[2:].split("=", 1) for item in command if item.startswith("--") and "=" in item)


def _modelfile(model: str) -> tuple[str, dict[str, str]]:
    base, params = "", {}
    for line in (DEPLOY / "ollama" / f"Modelfile.{model}").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            base = words[1]
        elif words[:1] == ["PARAMETER"]:
            params[words[1]] = words[2]
    return base, params


def _settings(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in [v for v in os.environ if v.startswith("APPLIANCE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("APPLIANCE_STORE__API_KEY", TEST_KEY)  # what compose passes in
    return load_settings(DEPLOY / name)


# -- the compose files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", STACKS)
def test_every_image_is_pinned_to_an_exact_version(name: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for service, spec in _services(name).items():
        if "build" in spec:  # built here: every base image of the Dockerfile must be pinned
            assert (DEPLOY / spec["build"]["context"]).resolve() == ROOT, service
            dockerfile = ROOT / spec["build"]["dockerfile"]
            assert dockerfile == DEPLOY / "Dockerfile", service
            bases = _dockerfile_bases(dockerfile)
            assert bases, "no FROM in deploy/Dockerfile"
            assert all(_is_pinned(b) for b in bases), f"unpinned base image in deploy/Dockerfile: {bases}"
            assert spec["image"] == f"rag-appliance:{pyproject['project']['version']}", service
        else:
            assert _is_pinned(spec["image"]), f"{name}: {service} image {spec['image']!r} is not an exact version"


@pytest.mark.parametrize("name", STACKS)
def test_every_service_has_a_healthcheck(name: str) -> None:
    for service, spec in _services(name).items():
        check = spec.get("healthcheck") or {}
        assert check.get("test"), f"{name}: {service} has no healthcheck"
        assert not check.get("disable"), f"{name}: {service} disables its healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), service


@pytest.mark.parametrize("name", STACKS)
def test_only_the_proxy_is_reachable_from_outside(name: str) -> None:
    compose = _compose(name)
    assert compose["networks"]["backend"] == {"internal": True}
    for service, spec in compose["services"].items():
        for key in ("network_mode", "ipc", "pid"):
            assert spec.get(key) != "host", f"{name}: {service} uses the host's {key}"
        if service == "nginx":  # HTTPS, and 80 that only redirects (tests/e2e/test_reverse_proxy.py)
            assert [p.rsplit(":", 1)[1] for p in spec["ports"]] == ["443", "80"]
            assert list(spec["networks"]) == ["frontend"]
        elif service == "appliance":
            assert "ports" not in spec, f"{name}: the appliance publishes a port past the proxy"
            assert "frontend" in spec["networks"]
        else:
            # Qdrant and the model server: no published port, and no route out of the host.
            assert "ports" not in spec, f"{name}: {service} publishes a port"
            assert spec["networks"] == ["backend"], f"{name}: {service} is on a network with egress"


@pytest.mark.parametrize("name", STACKS)
def test_gpu_services_reserve_gpus(name: str) -> None:
    model_server, _ = STACKS[name]
    for service, spec in _services(name).items():
        devices = spec.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if service == model_server:
            assert devices, f"{name}: {service} reserves no GPU"
            assert all(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
        else:
            assert not devices, f"{name}: {service} needs no GPU"


@pytest.mark.parametrize("name", STACKS)
def test_the_qdrant_key_is_a_required_variable_shared_by_both_ends(name: str) -> None:
    services = _services(name)
    assert SECRET_FROM_ENV.fullmatch(services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"])
    assert SECRET_FROM_ENV.fullmatch(services["appliance"]["environment"]["APPLIANCE_STORE__API_KEY"])
    assert services["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"


def test_appliance_and_qdrant_are_the_same_in_both_stacks() -> None:
    def shared(name: str) -> dict[str, Any]:
        services = _services(name)
        appliance = {k: v for k, v in services["appliance"].items() if k != "depends_on"}
        config = STACKS[name][1]
        appliance["volumes"] = [v.replace(f"./{config}:", "./CONFIG:") for v in appliance["volumes"]]
        return {"appliance": appliance, "qdrant": services["qdrant"]}

    assert shared("compose.yaml") == shared("compose.vllm.yaml")
    for name, (model_server, _) in STACKS.items():
        assert _services(name)["appliance"]["depends_on"] == {
            "qdrant": {"condition": "service_healthy"},
            model_server: {"condition": "service_healthy"},
        }


def test_vllm_serves_mistral_small_4_tensor_parallel_over_four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    vllm = _services("compose.vllm.yaml")["vllm"]
    flags = _flags(vllm["command"])
    (gpus,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert flags["tensor-parallel-size"] == "4" == str(gpus["count"])
    assert vllm["shm_size"]  # tensor-parallel workers need more than Docker's 64 MB
    # Air-gapped: a mounted folder, never a hub id, and no call home.
    assert vllm["command"][0].startswith("/models/")
    assert any(v.endswith(f":{vllm['command'][0]}:ro") for v in vllm["volumes"])
    env = vllm["environment"]
    assert (env["HF_HUB_OFFLINE"], env["VLLM_NO_USAGE_STATS"], env["DO_NOT_TRACK"]) == ("1", "1", "1")

    llm = _settings("appliance.vllm.yaml", monkeypatch).llm
    assert isinstance(llm, OpenAILLMSettings)
    assert llm.base_url == f"http://vllm:{flags['port']}/v1"
    assert llm.model == flags["served-model-name"]
    assert llm.context_window == int(flags["max-model-len"])


# -- the appliance settings and the Modelfiles --------------------------------------------------------


@pytest.mark.parametrize("name", [config for _, config in STACKS.values()])
def test_appliance_settings_load_and_use_the_qdrant_server(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(name, monkeypatch)
    assert str(settings.data_dir) == "/var/lib/appliance"
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 7860)
    assert settings.server.api_key_required  # listening beyond loopback: /v1 needs a key
    store = settings.store
    assert isinstance(store, QdrantServerStoreSettings)
    assert store.url == "http://qdrant:6333"
    assert "api_key" not in yaml.safe_load((DEPLOY / name).read_text())["store"]  # no secret in the file
    assert store.api_key is not None
    assert store.api_key.get_secret_value() == TEST_KEY


def test_ollama_settings_match_the_modelfile_and_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = _settings("appliance.yaml", monkeypatch).llm
    assert isinstance(llm, OllamaLLMSettings)
    assert llm.host == "http://ollama:11434"
    _, params = _modelfile(llm.model)  # the model is one we ship a Modelfile for
    assert llm.context_window == int(params["num_ctx"])  # a different num_ctx makes Ollama reload
    env = _services("compose.yaml")["ollama"]["environment"]
    assert llm.max_parallel == int(env["OLLAMA_NUM_PARALLEL"])
    assert str(llm.keep_alive) == env["OLLAMA_KEEP_ALIVE"]
    assert env["OLLAMA_NO_CLOUD"] == "1"


@pytest.mark.parametrize("model", ["mistral-small-4", "llama-4-scout"])
def test_modelfiles_set_the_parameters_we_rely_on(model: str) -> None:
    base, params = _modelfile(model)
    name, _, tag = base.partition(":")
    assert name, f"Modelfile.{model} has no FROM"
    assert tag not in ("", "latest"), f"Modelfile.{model}: FROM {base!r} is not an exact tag"
    assert int(params["num_ctx"]) >= 32768  # never Ollama's short default context
    assert float(params["temperature"]) <= 0.2
    assert int(params["num_predict"]) >= 256


def test_the_image_runs_the_server_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image runs as root"
    assert users[-1] not in ("root", "0")
    assert 'CMD ["appliance", "serve", "--host", "0.0.0.0", "--port", "7860"]' in lines
    assert any("APPLIANCE_CONFIG=/etc/appliance/appliance.yaml" in line for line in lines)


# -- the healthchecks work against a real HTTP server --------------------------------------------------


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path in ("/readyz", "/healthz", "/health") else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("name", "service", "port"), [
    ("compose.yaml", "appliance", 7860),
    ("compose.yaml", "qdrant", 6333),
    ("compose.vllm.yaml", "vllm", 8000),
])
@pytest.mark.parametrize("status", [200, 503])
def test_http_healthchecks_pass_only_on_200(name: str, service: str, port: int, status: int,
                                            http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    monkeypatch.setattr(_Probe, "status", status)
    kind, *argv = _services(name)[service]["healthcheck"]["test"]
    assert kind == "CMD"
    probe_port = str(http_server.server_address[1])
    argv = [a.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{probe_port}/")  # a URL
             .replace(f"127.0.0.1/{port}", f"127.0.0.1/{probe_port}")  # bash's /dev/tcp/HOST/PORT
            for a in argv]
    assert argv != _services(name)[service]["healthcheck"]["test"][1:], "the probe did not target 127.0.0.1"
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    rc = subprocess.run(argv, capture_output=True, timeout=20).returncode
    assert (rc == 0) == (status == 200)


# -- docker compose itself -----------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("name", STACKS)
def test_docker_compose_accepts_the_file(name: str, tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no `docker compose` plugin nor `docker-compose` on PATH (apt-get install docker-compose)")
    empty_env_file = tmp_path / "empty.env"  # a developer's deploy/.env must not hide a missing key
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "QDRANT_", "MISTRAL_", "APPLIANCE_", "DOCUMENTS_DIR"))}
    args = [*command, "--env-file", str(empty_env_file), "-f", str(DEPLOY / name), "config", "-q"]

    missing = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0, "compose accepted the file without a Qdrant key"
    assert "QDRANT_API_KEY" in missing.stderr

    env |= {"QDRANT_API_KEY": TEST_KEY, "MISTRAL_MODEL_DIR": str(tmp_path)}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
