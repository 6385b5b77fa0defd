"""The administrators' Status tab: ingestion jobs running now (progress and ETA), the health of the
store and the model, the answer settings employees never see, and the answer feedback export."""

from __future__ import annotations

import html
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from appliance.access.auth import Principal
    from appliance.services import Services

JOB_HEADERS = ["job", "kind", "by", "what", "done %", "files", "current file", "running (s)", "ETA (s)"]
MODES = ["hybrid", "dense", "keyword"]


def job_rows(jobs: list[dict[str, Any]]) -> list[list[Any]]:
    return [[j["id"], j["kind"], j["by"], j["what"], j["percent"], j["files"], j["current"], j["running_s"],
             "" if j["eta_s"] is None else j["eta_s"]] for j in jobs]


def health_markdown(services: Services) -> str:
    s = services.settings
    gate = services.answer_gate
    try:
        ready = services.health.readiness()
        health = f"✓ **Ready**: {ready['chunks']} chunks in the store; model `{html.escape(str(ready['model']))}`."
    except Exception as exc:  # the reason is for administrators: this tab is theirs
        health = f"✗ **Not ready**: {html.escape(str(exc))}"
    records = services.manifest.all()
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())) or "none yet"
    store = s.store.provider if hasattr(s.store, "provider") else "?"
    feedback = services.feedback.entries()
    down = sum(f["rating"] == "down" for f in feedback)
    # Every ingest run sharing the manifest, this server's or another machine's (ingest.runs).
    runs = [f"`{html.escape(w.owner.rsplit(':', 1)[0])}` since {time.strftime('%H:%M', time.localtime(w.started))}"
            for w in services.manifest.workers()]
    database = "PostgreSQL (shared by the replicas)" if s.shared_database else "SQLite (this server)"
    return (f"{health}\n\n- Documents: {len(records)} ({counts})\n- Store: `{store}` · chat model provider: "
            f"`{s.llm.provider}` · embeddings: `{getattr(services.embedding, 'model_name', '?')}` · "
            f"database: {database}\n"
            f"- Ingest runs in progress, on every machine: {', '.join(runs) if runs else 'none'}\n"
            f"- Answers waiting: {gate.waiting}, being written: {gate.running} (the page and the API together)\n"
            f"- Feedback: {len(feedback)} rated answers, {down} of them thumbs down")


def build_status_tab(services: Services, admin: Callable[[Any], Principal],
                     ) -> tuple[Any, Any, Callable[..., Any], list[Any]]:
    """The tab, its timer (started for administrators), a refresh function (request -> its outputs) and those."""
    import gradio as gr

    retrieval = services.settings.retrieval

    def refresh(request: gr.Request) -> tuple[Any, ...]:
        try:
            admin(request)
        except Exception:
            return [], ""
        return job_rows(services.jobs.running()), health_markdown(services)

    def jobs_only(request: gr.Request) -> Any:
        try:
            admin(request)
        except Exception:
            return []
        return job_rows(services.jobs.running())

    def apply(top_k: float, min_similarity: float, mode: str, request: gr.Request) -> str:
        who = admin(request)
        from appliance.settings import RetrievalSettings

        try:
            checked = RetrievalSettings.model_validate({**retrieval.model_dump(), "top_k": int(top_k),
                                                        "min_similarity": float(min_similarity), "mode": mode})
        except ValueError as exc:
            return f"⚠ {html.escape(str(exc))}"
        # The running engine reads these at each question: the change counts from the next one, for everyone.
        retrieval.top_k, retrieval.min_similarity, retrieval.mode = checked.top_k, checked.min_similarity, checked.mode
        services.vector_store.set_mode(checked.mode)  # the search spec was made from the settings once
        services.audit.record("settings", who.name, top_k=checked.top_k, min_similarity=checked.min_similarity,
                              mode=checked.mode)
        return (f"✓ From the next question: top_k {checked.top_k}, min_similarity {checked.min_similarity:g}, "
                f"mode {checked.mode}. Until a restart: put them under `retrieval:` in the settings file to keep them.")

    def export(rating: str, request: gr.Request) -> str:
        who = admin(request)
        out = Path(tempfile.mkdtemp(prefix="feedback-export-")) / "feedback.jsonl"  # a 0700 folder
        with open(os.open(out, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            services.feedback.export(f, None if rating == "all" else rating)  # type: ignore[arg-type]
        services.audit.record("feedback_export", who.name, rating=rating)
        return str(out)

    for handler in (refresh, jobs_only, apply, export):
        handler.__annotations__ = {"request": gr.Request}

    with gr.Tab("Status", id="status-tab", visible=False) as tab:
        gr.Markdown("### Ingestion running now\nUploads, `appliance ingest` runs handed to this server, and "
                    "watched folders; refreshed every 2 seconds.")
        jobs = gr.Dataframe(headers=JOB_HEADERS, interactive=False, elem_id="jobs-table")
        health = gr.Markdown("", elem_id="health")
        refresh_btn = gr.Button("Refresh", size="sm", elem_id="status-refresh")
        gr.Markdown("### Answer settings\nEmployees never see these. They apply to every user from the next "
                    "question, until a restart.")
        with gr.Row():
            top_k = gr.Slider(1, 20, value=retrieval.top_k, step=1, label="Passages given to the model (top_k)",
                              elem_id="setting-top-k")
            min_sim = gr.Slider(0.0, 0.9, value=retrieval.min_similarity, step=0.01,
                                label="Relevance threshold (min_similarity)", elem_id="setting-min-similarity")
            mode = gr.Dropdown(MODES, value=retrieval.mode, label="Search mode", elem_id="setting-mode")
        apply_btn = gr.Button("Apply", size="sm", elem_id="settings-apply")
        settings_note = gr.Markdown("")
        gr.Markdown("### Feedback\nEach rated answer with its question, sources and comment, as JSON lines "
                    "(also `appliance feedback export`).")
        with gr.Row():
            rating = gr.Dropdown(["all", "down", "up"], value="all", label="Ratings", scale=1)
            export_btn = gr.Button("Export feedback", size="sm", scale=1, elem_id="feedback-export")
        export_file = gr.File(label="Feedback export", interactive=False)
        timer = gr.Timer(2.0, active=False)
    timer.tick(jobs_only, None, jobs, show_progress="hidden")
    refresh_btn.click(refresh, None, [jobs, health])
    tab.select(refresh, None, [jobs, health])
    apply_btn.click(apply, [top_k, min_sim, mode], settings_note)
    export_btn.click(export, rating, export_file)
    return tab, timer, refresh, [jobs, health]
