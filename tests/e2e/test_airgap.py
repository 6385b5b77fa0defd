"""The main flows inside a network namespace with no network at all (`unshare -n`).

Only loopback exists in there: any attempt to download a model, tokenizer or NLTK/spaCy data,
or to send telemetry, fails, and so would the flow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest import ocr
from tests.conftest import ROOT, SAMPLES, is_root_with_unshare
from tests.support.scans import make_scan

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.airgap,
    pytest.mark.skipif(not is_root_with_unshare(), reason="needs root and unshare(1) for a network namespace"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip(8) to bring up loopback in the namespace"),
]

SCRIPT = textwrap.dedent(
    """\
    set -euo pipefail
    ip link set lo up
    # Prove there is no way out before running anything.
    if EGRESS_LOG= "$PY" -c "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)" 2>/dev/null; then
        echo "namespace has network" >&2; exit 90
    fi
    # (steps before the flows)
    # A clean environment: none of the offline switches set by hand; the appliance sets its own.
    unset HF_HUB_OFFLINE DO_NOT_TRACK SCARF_NO_ANALYTICS ORT_DISABLE_TELEMETRY GRADIO_ANALYTICS_ENABLED
    "$PY" -m appliance.cli ingest "$DOCS" --json --data-dir "$DATA" > "$OUT/ingest.json" || true
    "$PY" -m appliance.cli ask "How many bottles of water were delivered?" --json --data-dir "$DATA" > "$OUT/ask.json"
    "$PY" -m appliance.cli ask "Which room was the Kestrel build server moved to?" --json --data-dir "$DATA" \
        > "$OUT/ask-scan.json"
    "$PY" -m appliance.cli serve --port 7899 --data-dir "$DATA" > "$OUT/serve.log" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do
        curl -sf http://127.0.0.1:7899/healthz > /dev/null && break
        sleep 1
    done
    # The page, then one chat turn through Gradio's own HTTP API (what the browser's page calls).
    "$PY" - <<'EOF' > "$OUT/ui.json"
    import json, urllib.request
    base = "http://127.0.0.1:7899"
    page = urllib.request.urlopen(base + "/", timeout=30).read().decode()
    body = json.dumps({"data": ["What activities are planned for the family day?", []]}).encode()
    req = urllib.request.Request(base + "/gradio_api/call/respond", data=body,
                                 headers={"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(req, timeout=30))["event_id"]
    stream = urllib.request.urlopen(f"{base}/gradio_api/call/respond/{event_id}", timeout=300).read().decode()
    lines = stream.splitlines()
    done = lines.index("event: complete")
    # The chat, then the other outputs (the question box, the sources list and panel...).
    outputs = json.loads(lines[done + 1].removeprefix("data: "))
    chat, sources = outputs[0], json.dumps(outputs[1:])
    print(json.dumps({"page_has_gradio": "gradio" in page.lower(), "chat": chat, "sources": sources}))
    EOF
    # The OpenAI-compatible API, as a program uses it.
    "$PY" - <<'EOF' > "$OUT/api.json"
    import json
    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:7899/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model="rag-appliance", messages=[{"role": "user", "content": "How many bottles of water were delivered?"}])
    print(json.dumps({"text": reply.choices[0].message.content, "sources": reply.model_extra["sources"]}))
    EOF
    "$PY" -m appliance.cli doctor --json --data-dir "$DATA" > "$OUT/doctor.json" || true
    """
)


def run_offline(tmp_path: Path, python: str, pythonpath: list[Path], cwd: Path, before: str = "",
                extra_env: dict[str, str] | None = None, timeout: int = 900) -> Path:
    """Run `before`, then the main flows, in a network namespace with no network; checks what they
    produced and returns the folder of their outputs."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    make_scan(docs / "scans" / "facilities-notice.pdf")  # read by OCR, inside the air gap too
    out = tmp_path / "out"
    out.mkdir()
    egress_log = out / "egress.log"
    # Every Python process in there records its own non-loopback attempts, even swallowed ones.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "PY": python,
           "DOCS": str(docs), "DATA": str(tmp_path / "data"), "OUT": str(out),
           "PYTHONPATH": ":".join(str(p) for p in [ROOT / "tests" / "egress_probe", *pythonpath]),
           "EGRESS_LOG": str(egress_log), **(extra_env or {})}
    script = SCRIPT.replace("# (steps before the flows)\n", before, 1)
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    log = (out / "serve.log").read_text() if (out / "serve.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\nserve.log:\n{log[-2000:]}"
    attempts = egress_log.read_text() if egress_log.exists() else ""
    assert attempts == "", f"network access attempted inside the air gap:\n{attempts}"

    ingest = json.loads((out / "ingest.json").read_text())
    legacy = {".doc", ".ppt"}
    failed = {Path(f["path"]).suffix for f in ingest["files"] if f["status"] == "failed"
              and (ocr.available() is None or Path(f["path"]).name != "facilities-notice.pdf")}
    assert failed <= (set() if shutil.which("soffice") else legacy), ingest
    assert ingest["added"] + ingest["failed"] == len(list(SAMPLES.iterdir())) + 1
    scan = json.loads((out / "ask-scan.json").read_text())
    if ocr.available() is None:  # Tesseract installed (scripts/setup.sh does as root): the scan answers
        assert scan["grounded"]
        assert Path(scan["sources"][0]["path"]).name == "facilities-notice.pdf"
        assert scan["sources"][0]["page"] == 1
        assert "B-113" in scan["sources"][0]["text"]

    ask = json.loads((out / "ask.json").read_text())
    assert ask["grounded"]
    assert "20,000" in ask["answer"]
    assert Path(ask["sources"][0]["path"]).name == "fake-memo.pdf"
    assert ask["sources"][0]["page"] == 1

    ui = json.loads((out / "ui.json").read_text())
    assert ui["page_has_gradio"]
    answer = ui["chat"][-1]
    assert answer["role"] == "assistant"
    text = json.dumps(answer["content"])
    assert "family-day.eml" in text  # the citation footer
    assert "family-day.eml" in ui["sources"]

    api = json.loads((out / "api.json").read_text())
    assert api["sources"][0]["file_name"] == "fake-memo.pdf"
    assert "[1] fake-memo.pdf, page 1" in api["text"]

    doctor = {c["name"]: c for c in json.loads((out / "doctor.json").read_text())}
    assert doctor["telemetry"]["status"] == "ok", doctor["telemetry"]
    assert doctor["remote endpoints"]["status"] == "ok"
    return out


def test_ingest_ask_and_serve_with_no_network(tmp_path: Path) -> None:
    run_offline(tmp_path, sys.executable, [ROOT], ROOT)
