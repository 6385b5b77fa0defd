"""The Library tab: the documents a user may read (an administrator: all of them), filtered by name
and status, with ingestion errors and their reasons; drag-and-drop upload of files and folders with
progress; delete (an administrator, or a user their own uploads) and re-ingest (administrators).

The checks are those of the /v1/documents API (appliance.uploads), so the page and the API refuse
the same files with the same reasons."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.metadata import name_title

if TYPE_CHECKING:
    import gradio as gr

    from appliance.access.auth import Principal
    from appliance.services import Services
    from ingest.manifest import FileRecord

STATUSES = ["all", "ok", "failed", "skipped", "pending"]
HEADERS = ["name", "type", "pages", "chunks", "ingested at", "status", "error or notes", "folder"]
# Fixed widths: left to itself the table sizes columns by their content, so a long name takes half
# the width, an empty "error or notes" column shrinks until its header wraps letter by letter and
# "folder" falls off the right edge. These fit 1360 px; a narrower screen scrolls the table sideways.
WIDTHS: list[str | int] = ["250px", "64px", "72px", "80px", "150px", "80px", "280px", "220px"]
RESULT_HEADERS = ["file", "status", "chunks", "error or notes"]
RESULT_WIDTHS: list[str | int] = ["250px", "90px", "80px", "500px"]


@dataclass
class LibraryTab:
    admin_controls: list[Any]  # shown by the page's load event to administrators
    refresh: Callable[..., Any]
    inputs: list[Any]
    outputs: list[Any]


def document_rows(records: list[FileRecord], text: str = "", status: str = "all") -> tuple[list[list[Any]], list[str]]:
    """Table rows (newest first) and the matching paths, filtered by a name or title substring and a
    status. A document is named by its title when it has one of its own (`Title · file.pdf`), and its
    folder is given relative to the folder all listed documents share (the share), not as a server path."""
    from ui.scope_picker import relative, share_root

    needle = text.strip().lower()
    root = share_root([r.path for r in records])
    rows, paths = [], []
    for rec in sorted(records, key=lambda r: -r.ingested_at):
        path = Path(rec.path)
        title = str(rec.meta.get("title") or "")
        name = f"{title} · {path.name}" if title and title != name_title(path) else path.name
        if needle and needle not in name.lower():
            continue
        if status != "all" and rec.status != status:
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.ingested_at)) if rec.ingested_at else ""
        detail = rec.error or "; ".join(rec.notes)
        rows.append([name, path.suffix.lstrip(".").lower(), rec.pages if rec.pages is not None else "",
                     len(rec.chunk_ids), when, rec.status, detail, relative(str(path.parent), root)])
        paths.append(rec.path)
    return rows, paths


def build_library_tab(services: Services, caller: Callable[[Any], Principal]) -> LibraryTab:
    import gradio as gr

    from appliance.access.acl import own_upload, visible
    from appliance.uploads import (
        UploadRefused,
        check_content,
        check_names,
        check_uploader,
        ingest_uploads,
        remove_document,
        upload_folder,
    )
    from appliance.usecases import run_ingest

    upload_root = services.settings.upload_dir.absolute()

    def listing(text: str, status: str, every: bool, request: gr.Request) -> tuple[Any, ...]:
        principal = caller(request)
        records = [r for r in services.manifest.all()
                   if visible(principal, r, upload_root, every and principal.admin)]
        rows, paths = document_rows(records, text or "", status or "all")
        failed = sum(r.status == "failed" for r in records)
        summary = f"{len(rows)} of {len(records)} documents" + (f" · {failed} failed" if failed else "")
        return rows, paths, summary

    def upload(files: list[Any] | None, folder: list[Any] | None, text: str, status: str, every: bool,
               request: gr.Request, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 (Gradio's way)
        principal = caller(request)
        chosen = [Path(_path_of(f)) for f in [*(files or []), *(folder or [])]]
        if not chosen:
            return (gr.update(), gr.update(), gr.update(), [], "Choose or drop files (or a folder) first.",
                    None, None)
        try:
            check_uploader(principal)
        except UploadRefused as exc:
            return gr.update(), gr.update(), gr.update(), [], f"⚠ {exc.message}", None, None
        limit = services.settings.server.max_upload_files
        results: list[list[Any]] = []
        parts: list[tuple[Path, Path]] = []
        target = upload_folder(services, principal)
        target.mkdir(parents=True, exist_ok=True)
        names: set[str] = set()
        try:
            for n, tmp in enumerate(chosen):
                progress((n, len(chosen)), desc=f"checking {tmp.name}")
                part: Path | None = None
                try:
                    if n >= limit:
                        raise UploadRefused(400, f"at most {limit} files per upload (server.max_upload_files)")
                    (name,) = check_names([tmp.name])
                    if name in names:
                        raise UploadRefused(400, "another file of this upload has the same name")
                    part = target / f".{uuid.uuid4().hex}.part"  # unique: two uploads of one name never mix
                    shutil.copyfile(tmp, part)
                    check_content(part, name, services.settings)
                    parts.append((part, target / name))
                    names.add(name)
                except BaseException as exc:
                    if part is not None and (part, target / name) not in parts:
                        part.unlink(missing_ok=True)
                    if isinstance(exc, OSError):
                        exc = UploadRefused(400, f"the upload could not be read ({exc.strerror}): upload it again")
                    if not isinstance(exc, UploadRefused):
                        raise
                    results.append([tmp.name, "refused", 0, exc.message])

            def bar(total: int) -> Any:
                return _GradioBar(progress, total, len(parts))

            if parts:
                for r in ingest_uploads(services, parts, principal.name, "page", progress=bar):
                    results.append([r.name, r.status, r.chunks, r.error or "; ".join(r.notes)])
        except BaseException:
            for part, _ in parts:
                part.unlink(missing_ok=True)
            raise
        services.audit.record("upload", principal.name, via="page", files=[
            {"path": str(target.absolute() / r[0]), "status": r[1], "chunks": r[2]} for r in results])
        done = sum(r[1] in ("added", "updated", "unchanged") for r in results)
        rows, paths, summary = listing(text, status, every, request)
        return rows, paths, summary, results, f"{done} of {len(results)} files ingested.", None, None

    def selected(paths: list[str], event: gr.SelectData) -> tuple[str, str]:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if not isinstance(row, int) or not 0 <= row < len(paths):
            return "", ""
        return paths[row], f"Selected: `{Path(paths[row]).name}`"

    def remove(path: str, text: str, status: str, every: bool, request: gr.Request) -> tuple[Any, ...]:
        principal = caller(request)
        rec = services.manifest.get(path) if path else None
        if rec is None or not visible(principal, rec, upload_root, every=True):
            return *listing(text, status, every, request), "Select a document in the table first.", ""
        if not (principal.admin or own_upload(principal, rec, upload_root)):
            return (*listing(text, status, every, request),
                    "Only an administrator removes documents (a user: their own uploads).", path)
        from ingest.report import FileBusy

        try:
            result = remove_document(services, rec.path)
        except FileBusy as exc:
            return *listing(text, status, every, request), str(exc), path
        services.audit.record("delete", principal.name, path=rec.path, chunks=result.chunks if result else 0,
                              via="page")
        return *listing(text, status, every, request), f"Removed `{Path(rec.path).name}` from the index.", ""

    def reingest(path: str, text: str, status: str, every: bool, request: gr.Request,
                 progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 (Gradio's way)
        principal = caller(request)
        if not principal.admin:
            return *listing(text, status, every, request), "Re-ingesting needs an administrator.", path
        rec = services.manifest.get(path) if path else None
        if rec is None:
            return *listing(text, status, every, request), "Select a document in the table first.", ""
        report = run_ingest(services, [Path(path)], principal.name, "reingest", "page", force=True,
                            progress=lambda total: _GradioBar(progress, total, 1))
        f = report.files[0] if report.files else None
        note = (f"`{Path(path).name}`: {f.status}, {f.chunks} chunks" + (f" ({f.error})" if f.error else "")
                if f else "nothing to do")
        return *listing(text, status, every, request), note, path

    for handler in (listing, remove):
        handler.__annotations__ = {"request": gr.Request}
    upload.__annotations__ = {"request": gr.Request, "progress": gr.Progress}
    reingest.__annotations__ = {"request": gr.Request, "progress": gr.Progress}
    selected.__annotations__ = {"event": gr.SelectData}

    with gr.Tab("Library", id="library-tab"):
        with gr.Row():
            search = gr.Textbox(label="Search by name", scale=3, elem_id="library-search")
            status = gr.Dropdown(STATUSES, value="all", label="Status", scale=1, elem_id="library-status")
            every = gr.Checkbox(label="Every document (administrators)", value=False, visible=False,
                                elem_id="library-all")
            refresh_btn = gr.Button("Refresh", size="sm", scale=1, elem_id="library-refresh")
        summary = gr.Markdown("", elem_id="library-summary")
        table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, column_widths=WIDTHS,
                             elem_id="library-table")
        paths_state = gr.State([])
        chosen = gr.State("")
        with gr.Row():
            chosen_note = gr.Markdown("")
            delete_btn = gr.Button("Delete from the index", size="sm", variant="stop", elem_id="library-delete")
        with gr.Row(visible=False) as admin_row:
            reingest_btn = gr.Button("Re-ingest (parse and embed again)", size="sm", elem_id="library-reingest")
        action_note = gr.Markdown("", elem_id="library-action")
        gr.Markdown("### Add documents\nDrop files or a folder below (PDF, Office, HTML, e-mail, Markdown, text…). "
                    "Your uploads are readable by you alone; an administrator's follow the access rules.")
        with gr.Row():
            files = gr.File(label="Files", file_count="multiple", elem_id="upload-files")
            folder = gr.File(label="A folder", file_count="directory", elem_id="upload-folder")
        upload_btn = gr.Button("Upload and ingest", variant="primary", elem_id="upload-go")
        upload_note = gr.Markdown("", elem_id="upload-note")
        results = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, wrap=True, column_widths=RESULT_WIDTHS,
                               elem_id="upload-results")

    inputs = [search, status, every]
    outputs = [table, paths_state, summary]
    for trigger in (search.submit, status.change, every.change, refresh_btn.click):
        trigger(listing, inputs, outputs)
    table.select(selected, paths_state, [chosen, chosen_note])
    delete_btn.click(remove, [chosen, *inputs], [*outputs, action_note, chosen])
    reingest_btn.click(reingest, [chosen, *inputs], [*outputs, action_note, chosen])
    # One progress bar, on the results box (by default each of the six outputs draws its own).
    upload_btn.click(upload, [files, folder, *inputs], [*outputs, results, upload_note, files, folder],
                     concurrency_limit=1, concurrency_id="library-writes", show_progress_on=results)

    return LibraryTab(admin_controls=[admin_row, every], refresh=listing, inputs=inputs, outputs=outputs)


class _GradioBar:
    """The pipeline's progress interface, shown as Gradio's progress bar: bytes done, the file being read."""

    def __init__(self, progress: Any, total: int, files: int) -> None:
        self._progress, self._total, self._files = progress, max(total, 1), files
        self._done = self._count = 0
        self._file = ""
        progress((0, self._total), desc=f"ingesting {files} files", unit="bytes")

    def update(self, n: int) -> None:
        self._done += n
        self._count += 1
        self._progress((self._done, self._total), desc=f"{self._count} of {self._files} files · {self._file}",
                       unit="bytes")

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._file = text.rsplit(", ", 1)[-1]

    def close(self) -> None:
        pass


def _path_of(f: Any) -> str:
    return str(f if isinstance(f, (str, Path)) else getattr(f, "name", f))
