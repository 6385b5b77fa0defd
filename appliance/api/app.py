"""One FastAPI app on one port: health endpoints, with the Gradio chat UI mounted at /."""

from __future__ import annotations

import logging
import logging.handlers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from appliance.services import Services

log = logging.getLogger("appliance")


def create_app(services: Services) -> FastAPI:
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from ui.chat import build_chat_ui, theme

    app = FastAPI(title="RAG appliance", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Any:
        try:
            chunks = services.store.count()
            model = services.llm.metadata.model_name
        except Exception as exc:  # report, don't crash the probe
            return JSONResponse({"status": "not ready", "error": str(exc)}, status_code=503)
        return {"status": "ready", "chunks": chunks, "model": model}

    blocks = build_chat_ui(services)
    mounted: FastAPI = gr.mount_gradio_app(app, blocks, path="/", theme=theme(), footer_links=[], ssr_mode=False,
                               show_error=True, enable_monitoring=False, mcp_server=False, pwa=False)
    return mounted


def _setup_logging(services: Services) -> None:
    log_dir = services.settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(log_dir / "appliance.log", maxBytes=10 << 20, backupCount=5)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


def serve(services: Services) -> None:
    import uvicorn

    _setup_logging(services)
    # Load every model and open the store now: a missing part fails at start-up, not at the first question.
    services.store.count()
    services.embedding.embed(["warm up"])
    services.llm.count_tokens("warm up")
    _ = services.rag  # builds the reranker, if one is configured
    app = create_app(services)
    cfg = services.settings.server
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        # Sign-in arrives with the users-and-permissions work; until then, say it loudly.
        log.warning("listening on %s without sign-in: anyone who reaches this port can read the documents", cfg.host)
        print(f"WARNING: listening on {cfg.host} without sign-in: anyone who reaches port {cfg.port} "
              "can query the documents. Use 127.0.0.1 or a reverse proxy with authentication.", flush=True)
    log.info("serving on http://%s:%d", cfg.host, cfg.port)
    print(f"Chat UI: http://{cfg.host}:{cfg.port}/  (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False)
