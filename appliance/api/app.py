"""One FastAPI app on one port: the API under /v1, health, metrics, and the Gradio chat UI at /."""

from __future__ import annotations

import logging
import logging.handlers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from appliance.services import Services

log = logging.getLogger("appliance")


def create_app(services: Services, ui: bool = True) -> FastAPI:
    """The API under /v1, health and metrics, and (ui=True) the Gradio chat page at /."""
    from fastapi import Depends, FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response

    from appliance.api import (
        admin,
        anthropic_compat,
        conversations,
        documents,
        mcp_server,
        oidc,
        openai_compat,
        signin,
        unmatched,
    )
    from appliance.api.errors import install_error_handlers
    from appliance.api.limits import BodyLimitMiddleware
    from appliance.api.metrics import MetricsMiddleware
    from appliance.api.security import GuardMiddleware, gradio_user, require_admin, require_principal
    from appliance.api.state import AppState
    from appliance.health import component_of

    state = AppState(services)
    # The schema names no version: an anonymous scanner learns nothing to match against advisories.
    app = FastAPI(title="RAG appliance", version="1", docs_url=None, redoc_url=None,
                  description="Answers from your documents with citations. OpenAI-compatible chat under /v1, "
                              "documents and search REST, health and Prometheus metrics.")
    app.state.appliance = state
    install_error_handlers(app)
    keyed = [Depends(require_principal)]
    app.include_router(openai_compat.router, dependencies=keyed)
    app.include_router(anthropic_compat.router, dependencies=keyed)  # /v1/messages: Anthropic's clients
    app.include_router(documents.router, dependencies=keyed)
    app.include_router(conversations.router, dependencies=keyed)
    if services.settings.embeddings.serve:  # POST /v1/embeddings: the embedding model, lent to other machines
        from appliance.api import embeddings

        app.include_router(embeddings.make_router(services.settings.embeddings), dependencies=keyed)
    app.include_router(admin.router)
    app.include_router(signin.router)
    app.include_router(oidc.router)
    mcp_server.mount(app, state)  # /mcp: the same keys, limits and audit as /v1 (appliance/api/mcp_server.py)
    app.include_router(unmatched.router)  # last: only what no /v1 route took

    @app.get("/healthz", tags=["Health"])
    async def healthz() -> dict[str, str]:  # on the event loop: answers even when every worker thread is busy
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["Health"], responses={503: {"description": "Not ready: the reason is in `error`."}})
    async def readyz() -> Any:
        """Readiness: the store answers and the chat model is loaded (or its server has it). Anonymous, so
        it says no more than that: counts and model names are on the Status tab and in /metrics."""
        try:
            await run_in_threadpool(services.health.readiness)
        except Exception as exc:  # report, don't crash the probe; the detail (hosts, paths) goes to the log only
            log.warning("not ready: %s", exc)
            return JSONResponse({"status": "not ready", "error": component_of(exc)}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics", tags=["Health"], response_class=Response, dependencies=[Depends(require_admin)])
    def metrics() -> Any:
        """Prometheus text format: requests, latencies, answers, tokens, queue, ingestion, chunks. For an
        administrator or an admin key (`appliance keys create prometheus --admin`)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if ui:
        import os

        # Gradio keeps uploaded files in its temp folder: inside the data directory (owner-only), never /tmp.
        upload_tmp = services.settings.data_dir.absolute() / "tmp" / "gradio"
        upload_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.environ["GRADIO_TEMP_DIR"] = str(upload_tmp)
        import gradio as gr

        from appliance.api.gradio_guard import GradioGuard, harden_mounted_gradio
        from ui.chat import build_chat_ui
        from ui.page import CSS, JS, theme

        blocks = build_chat_ui(services)
        # Our guard (below) refuses anonymous requests before Gradio sees them; Gradio learns the user
        # name from it, for gr.Request.username.
        # show_error=False: an exception's text (paths, hosts) never reaches the page; gr.Error messages do.
        app = gr.mount_gradio_app(app, blocks, path="/", theme=theme(), css=CSS, head=JS, footer_links=[],
                                  ssr_mode=False, show_error=False, enable_monitoring=False, mcp_server=False,
                                  pwa=False, auth_dependency=gradio_user(state),
                                  max_file_size=int(services.settings.ingest.max_file_mb * (1 << 20)))
        harden_mounted_gradio(blocks, services.settings, upload_tmp)
        app.state.gradio_blocks = blocks
        app.add_middleware(GradioGuard, state=state, cache=upload_tmp, blocks=blocks)  # inside the body limit
    server = services.settings.server
    limit = server.max_upload_files * int(services.settings.ingest.max_file_mb * (1 << 20)) + (1 << 20)
    app.add_middleware(BodyLimitMiddleware, max_upload_bytes=limit, max_other_bytes=server.max_request_kb << 10)
    app.add_middleware(GuardMiddleware, state=state)  # before any body is read: anonymous is refused first
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts the 413s and 401s too
    return app


def _setup_logging(services: Services) -> None:
    log_dir = services.settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(log_dir / "appliance.log", maxBytes=10 << 20, backupCount=5)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def serve(services: Services) -> None:
    import signal
    import sys

    import uvicorn

    from appliance.access.secrets_check import refuse_weak_secrets

    refuse_weak_secrets(services.settings)  # before anything is loaded: a refused start is quick
    _setup_logging(services)
    # Load every model and open the store now: a missing part fails at start-up, not at the first question.
    services.store.count()
    services.embedding.embed(["warm up"])
    print(f"Chat model: {services.llm.check()}", flush=True)  # a remote model that is missing fails here
    _ = services.rag  # builds the reranker, if one is configured
    app = create_app(services, ui=services.settings.ui.enabled)
    cfg = services.settings.server
    from appliance.usecases import apply_acl

    changed = apply_acl(services, "serve", "serve")  # acl rules edited while the server was down
    if changed:
        print(f"Permissions: {len(changed)} document(s) follow the current acl rules now.", flush=True)
    if services.auth_required():
        if not services.users.count() and services.settings.auth.oidc is None:
            print("NOTE: sign-in is required and no user exists yet: create the first administrator with "
                  "`appliance users add NAME --admin`.", flush=True)
    elif not cfg.loopback_only:  # auth.required: false beyond loopback, refused outside dev mode
        log.warning("serving on %s without sign-in (auth.required: false)", cfg.host)
        print(f"WARNING: auth.required is false on {cfg.host}: anyone who reaches port {cfg.port} reads every "
              "document.", flush=True)
    log.info("serving on http://%s:%d", cfg.host, cfg.port)
    if services.settings.ui.enabled:
        print(f"Chat UI: http://{cfg.host}:{cfg.port}/", flush=True)
    print(f"API: http://{cfg.host}:{cfg.port}/v1 (OpenAI-compatible; schema at /openapi.json)  "
          "(Ctrl+C to stop)", flush=True)
    from appliance.api.connections import client_limits
    from appliance.handover import announce, withdraw

    # `appliance ingest` on this data directory hands its job to this server (appliance/handover.py).
    running = announce(services.settings.data_dir, cfg.host, cfg.port)
    app.state.appliance.admin_token = running.token
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit normally then, so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    watcher = _watch(services)
    try:
        # uvicorn's default trusts X-Forwarded-For/-Proto from 127.0.0.1: any local process could then name
        # its own address (and dodge the per-address sign-in throttle). Only the configured proxies may.
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False, server_header=False,
                    proxy_headers=bool(cfg.trusted_proxies), forwarded_allow_ips=cfg.trusted_proxies,
                    **client_limits(cfg))  # slow clients and open connections: appliance/api/connections.py
    finally:
        if watcher is not None:
            watcher.stop()
        withdraw(services.settings.data_dir, running)


def _watch(services: Services) -> Any:
    """ingest.watch: watch the folders, sync them once, then keep them in sync; returns the Watcher."""
    folders = services.settings.ingest.watch
    if not folders:
        return None
    import threading
    from pathlib import Path

    from appliance.backends.common import BackendUnavailable
    from ingest.watch import Watcher, watch_folders

    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise BackendUnavailable(f"ingest.watch: no such folder: {', '.join(missing)}")

    def job(paths: list[Path]) -> None:
        from appliance.usecases import run_ingest

        report = run_ingest(services, paths, "server", "watch", "watch", prune=True)
        changed = {s: report.count(s) for s in ("added", "updated", "removed", "failed") if report.count(s)}
        if changed:
            log.info("watch: %s", ", ".join(f"{n} {s}" for s, n in changed.items()))

    watcher = Watcher(list(folders), debounce_ms=services.settings.ingest.watch_debounce_ms,
                      exclude=(services.settings.data_dir,))

    def run() -> None:
        try:
            job(list(folders))  # what changed while the server was down
        except Exception:
            log.exception("watch: the first sync of %s failed; watching goes on", folders)
        watch_folders(watcher, job)

    threading.Thread(target=run, name="ingest-watch-jobs", daemon=True).start()
    print(f"Watching for changes: {', '.join(str(f) for f in folders)}", flush=True)
    return watcher
