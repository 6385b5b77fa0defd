"""POST /v1/admin/ingest: an ingest job handed over by `appliance ingest` while this server holds
the embedded store. Authorised by the token in <data_dir>/server.json, not by API keys."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.errors import ApiError
from appliance.api.schemas import ERRORS
from appliance.api.state import AppState, local_request

router = APIRouter(tags=["Admin"])


class IngestJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, description="Absolute paths on the server's machine.")
    prune: bool = False
    dry_run: bool = False
    retry_failed: bool = False


def _authorise(request: Request) -> AppState:
    state: AppState = request.app.state.appliance
    if not local_request(request):
        # The token never leaves the machine; refusing other hosts keeps it that way even if it did.
        raise ApiError(403, "ingest jobs are handed over from this machine only")
    header = request.headers.get("authorization", "").encode()
    if state.admin_token is None or not secrets.compare_digest(header, f"Bearer {state.admin_token}".encode()):
        raise ApiError(401, "this endpoint takes the token of <data_dir>/server.json (used by `appliance ingest`)")
    return state


@router.post("/v1/admin/ingest/cancel", responses=ERRORS)
def cancel(request: Request) -> dict[str, bool]:
    """Stop the handed-over ingest job between files (Ctrl-C in `appliance ingest`); the next job resumes."""
    state = _authorise(request)
    running = state.ingest_running
    if running:
        state.ingest_cancel.set()
    return {"cancelled": running}


@router.post("/v1/admin/ingest", responses={**ERRORS, 200: {
    "description": "NDJSON events: start {total bytes}, progress {advance, file}, then done {report} or error."}})
async def ingest(job: IngestJob, request: Request) -> StreamingResponse:
    state = _authorise(request)
    paths = [Path(p) for p in job.paths]
    if not all(p.is_absolute() for p in paths):
        raise ApiError(400, "paths must be absolute")
    data_dir = state.services.settings.data_dir.absolute()
    if any(p == data_dir or data_dir in p.parents for p in paths):
        raise ApiError(400, f"{data_dir} is the appliance's own data directory, not documents")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def put(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    class Bar:
        """The progress object the pipeline drives, as a tqdm bar would be."""

        def __init__(self, total: int) -> None:
            put({"event": "start", "total": total})
            self.file = ""

        def update(self, n: int) -> None:
            put({"event": "progress", "advance": n, "file": self.file})

        def set_postfix_str(self, text: str, refresh: bool = True) -> None:
            self.file = text
            put({"event": "file", "file": text})

        def close(self) -> None:
            pass

    def run() -> dict[str, Any]:
        with state.services.write_lock:
            state.ingest_cancel.clear()
            state.ingest_running = True
            try:
                report = state.services.ingest_pipeline.run(paths, prune=job.prune, dry_run=job.dry_run,
                                                            retry_failed=job.retry_failed, progress=Bar,
                                                            cancel=state.ingest_cancel)
            finally:
                state.ingest_running = False
        for f in report.files:
            state.metrics.ingest_files.labels(f.status).inc()
        return report.to_dict()

    # The job runs to its end even if the client goes away (as `ingest` would in its own process).
    task = asyncio.ensure_future(anyio.to_thread.run_sync(run, limiter=state.writer()))

    async def events() -> AsyncIterator[str]:
        while not (task.done() and queue.empty()):
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            yield json.dumps(event) + "\n"
        try:
            yield json.dumps({"event": "done", "report": task.result()}) + "\n"
        except Exception as exc:
            yield json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n"

    return StreamingResponse(events(), media_type="application/x-ndjson")
