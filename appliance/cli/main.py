"""The command line: `appliance ingest|ask|serve|docs`; `ingest` is also its own console script."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from appliance.cli.common import _fail_cleanly, _services, _settings, settings_options

if TYPE_CHECKING:
    from appliance.rag import Answer
    from appliance.services import Services
    from ingest.watch import Watcher

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rag-appliance")
def main() -> None:
    """Private, on-prem RAG appliance: ingest folders, ask questions, serve the chat UI."""
    _private_files()


def _private_files() -> None:
    """Everything a command creates (SQLite -wal files, store, uploads, logs, Gradio's cache) is the owner's
    alone: without this the umask (usually 022) left all but the chmod-ed files readable by every local user."""
    import os

    os.umask(0o077)


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--prune", is_flag=True, help="Remove files that disappeared from the given folders.")
@click.option("--retry-failed", is_flag=True, help="Parse again the unchanged files that failed before.")
@click.option("--watch", is_flag=True,
              help="After this run, keep watching: created, changed, moved and deleted files are synced within "
                   "seconds (ingest.watch_debounce_ms), until Ctrl-C.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: when a terminal].")
@settings_options
def ingest_command(paths: tuple[Path, ...], as_json: bool, dry_run: bool, prune: bool, retry_failed: bool,
                   watch: bool, progress: bool | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Ingest files and folders: parse, chunk, embed and store; unchanged files are skipped.

    Ctrl-C stops cleanly: what was stored stays, and the same command resumes with the rest."""
    if watch and dry_run:
        raise click.UsageError("--watch and --dry-run do not go together")
    services = _services(config_file, data_dir)
    show = sys.stderr.isatty() if progress is None else progress

    def bar(total: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                    desc="ingest", dynamic_ncols=True, mininterval=0.5)

    def job(targets: list[Path], prune: bool, quiet: bool = False) -> dict[str, Any]:
        from appliance.backends.store import StoreLocked
        from appliance.cli.access import actor
        from appliance.cli.handover import ingest_through
        from appliance.handover import find
        from appliance.usecases import run_ingest

        try:
            return run_ingest(services, targets, actor(), "ingest", "cli", progress=bar if show else None,
                              prune=prune, dry_run=dry_run, retry_failed=retry_failed).to_dict()
        except StoreLocked:
            server = find(services.settings.data_dir)
            if server is None:
                raise
            if not quiet:
                click.echo(f"`appliance serve` (pid {server.pid}) holds the store: the job runs there.", err=True)
            handed = {"paths": [str(p.absolute()) for p in targets], "prune": prune, "dry_run": dry_run,
                      "retry_failed": retry_failed}
            return ingest_through(server, handed, bar if show else None)

    watcher = _start_watching(services, list(paths)) if watch else None  # before the first run: nothing is missed
    try:
        try:
            data = _fail_cleanly(lambda: job(list(paths), prune))
        except KeyboardInterrupt:
            click.echo("stopped: what was stored is kept; run the same command again to resume.", err=True)
            sys.exit(130)
        _print_ingest_report(data, as_json, dry_run)
        if watcher is not None:
            _ingest_changes(watcher, list(paths), lambda changed: job(changed, True, quiet=True), as_json)
            return
    finally:
        if watcher is not None:
            watcher.stop()
        services.close()
    sys.exit(1 if data["failed"] else 0)


def _print_ingest_report(data: dict[str, Any], as_json: bool, dry_run: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        sys.stdout.flush()
        return
    for f in data["files"]:
        if f["status"] in ("failed", "skipped"):
            click.echo(f"{f['status']:8} {f['path']}: {f['error']}")
        for note in f["notes"] if f["status"] in ("added", "updated") else []:
            click.echo(f"note     {f['path']}: {note}")
    counts = ", ".join(f"{data[s]} {s}" for s in ("added", "updated", "unchanged", "removed", "failed", "skipped"))
    click.echo(f"{counts} ({data['chunks']} chunks, {data['seconds']:.1f}s)" + (" [dry run]" if dry_run else ""))
    sys.stdout.flush()  # --watch prints one report per batch, and someone may be reading them through a pipe


def _start_watching(services: Services, roots: list[Path]) -> Watcher:
    from ingest.watch import Watcher

    existing = [r for r in roots if r.exists()]  # a file is watched on its own
    if not existing:
        raise click.ClickException("nothing to watch: none of the given paths exists")
    settings = services.settings
    return Watcher(existing, debounce_ms=settings.ingest.watch_debounce_ms, exclude=(settings.data_dir,))


def _ingest_changes(watcher: Watcher, roots: list[Path], job: Callable[[list[Path]], dict[str, Any]],
                    as_json: bool) -> None:
    """`ingest --watch`: one job per debounced batch of changes, each with its own summary, until Ctrl-C."""
    click.echo(f"watching {', '.join(str(r) for r in roots)} for changes (Ctrl-C to stop)", err=True)
    try:
        for changed in watcher:
            try:
                data = _fail_cleanly(lambda changed=changed: job(changed))  # type: ignore[misc]
            except click.ClickException as exc:
                click.echo(f"error: {exc.message} (watching goes on)", err=True)
                continue
            _print_ingest_report(data, as_json, False)
    except KeyboardInterrupt:
        pass
    click.echo("stopped watching.", err=True)


@main.command("ask")
@click.argument("question", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True,
              help='Print {"answer", "grounded", "match", "unsupported", "cited", "sources": [{"path", "page", '
                   '"score", "text", ...}]}.')
@click.option("--whole-document", is_flag=True,
              help="Answer from the whole of the best-matching document when it fits the model's context.")
@click.option("--as-user", "as_user", default=None,
              help="Answer from what this user may read (check the acl rules); default: every document.")
@click.option("--in", "within", multiple=True, type=click.Path(path_type=Path),
              help="Search only this folder (with its subfolders) or file, as ingested; repeatable.")
@click.option("--type", "file_types", multiple=True, help="Search only files of this type (pdf, docx, eml...); "
              "repeatable.")
@click.option("--since", default=None, help="Only documents dated on or after YYYY-MM-DD (sent, else modified, "
              "else created; undated documents are left out).")
@click.option("--until", default=None, help="Only documents dated on or before YYYY-MM-DD.")
@settings_options
def ask_command(question: tuple[str, ...], as_json: bool, whole_document: bool, as_user: str | None,
                within: tuple[Path, ...], file_types: tuple[str, ...], since: str | None, until: str | None,
                config_file: Path | None, data_dir: Path | None) -> None:
    """Answer a question from the ingested documents, with numbered sources.

    Run on the appliance's own machine by its administrator, it reads every document unless --as-user.
    --in, --type, --since and --until narrow the search inside the store query; nothing found there
    is said so, never searched for elsewhere. While `appliance serve` holds the store, the server
    answers: the same streamed answer and sources."""
    import os

    from appliance.backends.scope import InvalidScope, Scope
    from appliance.cli.handover import answer_from_record, ask_through, server_holding_store

    try:  # paths as ingest stored them: absolute, symbolic links kept (os.path.abspath, as discover does)
        scope = Scope.checked([os.path.abspath(p) for p in within], (), file_types, since, until) or None
    except InvalidScope as exc:
        raise click.BadParameter(str(exc)) from None
    services = _services(config_file, data_dir)
    text = " ".join(question)

    def show(token: str) -> None:
        click.echo(token, nl=False)
        sys.stdout.flush()

    try:
        groups: frozenset[str] | None = None
        if as_user is not None:
            user = services.users.get(as_user.strip().lower())
            if user is None:
                raise click.ClickException(f"no user named {as_user!r} (`appliance users list`)")
            groups = user.principal().groups
        server = server_holding_store(services)
        if server is not None:  # it holds the store: the same use case answers there, tokens streamed back
            job = {"question": text, "whole_document": whole_document, "as_user": as_user,
                   "within": [os.path.abspath(p) for p in within], "file_types": list(file_types),
                   "since": since, "until": until}
            record = _fail_cleanly(lambda: ask_through(server, job, None if as_json else show))
            final: Answer | None = answer_from_record(record, text)
        else:
            final = _fail_cleanly(lambda: _answer_here(services, text, groups, whole_document, scope,
                                                       None if as_json else show))
            record = final.to_dict()
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            return
        click.echo()
        if final and final.weak:
            click.echo("\nWeak match: no passage reaches retrieval.strong_similarity; check the sources.")
        if final and final.unsupported:
            click.echo(("" if final.weak else "\n") + "Not found in the sources: " + ", ".join(final.unsupported))
        if final and final.sources:
            click.echo("\nSources:" if final.grounded else "\nClosest passages (below the relevance threshold):")
            for s in final.sources:
                passage = " ".join(s.text.split())
                passage = passage if len(passage) <= 300 else passage[:297] + "..."
                score = f"{s.dense_score:.2f}" if s.dense_score is not None else "-"
                click.echo(f"[{s.number}] {s.path}" + (f"  page {s.page}" if s.page else "")
                           + f"  (similarity {score})\n    {passage}")
        if final and final.whole_document:
            click.echo(f"\nThe whole of {final.whole_document} fits the model's context: "
                       "ask again with --whole-document to answer from all of it.")
    finally:
        services.close()


def _answer_here(services: Services, question: str, groups: frozenset[str] | None, whole_document: bool,
                 scope: Any, show: Callable[[str], None] | None) -> Answer:
    """`ask` in this process: the answer use case, as the OS user who runs the command, channel `cli`."""
    from appliance.access.auth import Principal
    from appliance.handover import os_actor
    from appliance.rag import Answer
    from appliance.usecases import answer

    principal = Principal(os_actor(), "local", groups, True)
    final: Answer | None = None
    for event in answer(services, principal, question, [], "cli", whole_document=whole_document, scope=scope):
        if isinstance(event, Answer):
            final = event
        elif show is not None:
            show(event)
    assert final is not None  # the use case always ends with the Answer
    return final


@main.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help='Print one object: "ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_p50", '
                   '"latency_ms_p95" (the search `ask` runs), and what was measured.')
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv judges the run.")
@click.option("--queries", "max_queries", type=click.IntRange(min=1), default=None,
              help="Evaluate only the first N judged queries.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr [default: when a terminal].")
@settings_options
def eval_command(dataset: Path, as_json: bool, split: str, max_queries: int | None, progress: bool | None,
                 config_file: Path | None, data_dir: Path | None) -> None:
    """Measure retrieval on a BEIR-layout DATASET folder (corpus.jsonl, queries.jsonl, qrels/).

    The corpus goes through the real ingest pipeline into a store of its own under
    <data-dir>/eval/ (kept, so a re-run only queries); your documents' store is not touched.
    Retrieval settings (mode, fusion, weights, reranker) apply as they do to `ask`."""
    from appliance.ops.evaluation import DatasetError, evaluate

    services = _services(config_file, data_dir)  # validates settings and applies the offline guard
    settings = services.settings
    services.close()
    show = sys.stderr.isatty() if progress is None else progress

    def bar(stage: str, total: int) -> Any:
        from tqdm import tqdm

        if stage == "ingest":
            return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                        desc="ingest corpus", dynamic_ncols=True, mininterval=0.5)
        return tqdm(total=total, unit="query", file=sys.stderr, desc="queries", dynamic_ncols=True, mininterval=0.5)

    def run() -> Any:
        try:
            return evaluate(settings, dataset, split=split, max_queries=max_queries, progress=bar if show else None)
        except DatasetError as exc:  # before _fail_cleanly, which reads other ValueErrors as model errors
            raise click.ClickException(str(exc)) from None

    result = _fail_cleanly(run)
    data = result.to_dict()
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"{result.dataset}: {result.queries} queries, {result.documents} documents, {result.chunks} chunks "
               f"(retrieval {data['settings']['mode']}"
               + (f", fusion {data['settings']['fusion']}" if data['settings']['mode'] == "hybrid" else "") + ")")
    if result.unindexed:
        click.echo(f"  {len(result.unindexed)} documents not indexed, counted as misses (e.g. {result.unindexed[0]})")
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        click.echo(f"  {key:<12} {data[key]:.4f}")
    click.echo(f"  latency      p50 {data['latency_ms_p50']:.1f} ms, p95 {data['latency_ms_p95']:.1f} ms per query "
               f"(as `ask` searches; the 100-document search behind the metrics: p95 "
               f"{data['deep_search_ms_p95']:.1f} ms)")


@main.command("serve")
@click.option("--host", default=None, help="Listen address [default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default 7860].")
@settings_options
def serve_command(host: str | None, port: int | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Serve the chat UI and the HTTP API on one port."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    services = _services(config_file, data_dir, {"server": server} if server else None)
    from appliance.api.app import serve

    try:
        _fail_cleanly(lambda: serve(services))
    finally:
        services.close()


@main.group("docs")
def docs_group() -> None:
    """List and remove ingested documents."""


@docs_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@settings_options
def docs_list(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List every file in the manifest with its status."""
    services = _services(config_file, data_dir)
    try:
        records = services.manifest.all()
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps([{"path": r.path, "status": r.status, "chunks": len(r.chunk_ids), "pages": r.pages,
                                "error": r.error, "ingested_at": r.ingested_at, **r.meta} for r in records]))
        return
    import time

    from ingest.metadata import name_title

    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.ingested_at))
        error = f"  ({r.error})" if r.error else ""
        title = r.meta.get("title", "")
        about = f"  \"{title[:60]}\"" if title and title != name_title(Path(r.path)) else ""
        dated = r.meta.get("email_date") or r.meta.get("modified") or r.meta.get("created") or ""
        dated = f"  dated {dated[:10]}" if dated else ""
        click.echo(f"{r.status:7} {len(r.chunk_ids):5} chunks  {when}  {r.path}{about}{dated}{error}")


@docs_group.command("rm")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@settings_options
def docs_rm(paths: tuple[Path, ...], config_file: Path | None, data_dir: Path | None) -> None:
    """Remove files (or everything under folders) from the index; the files themselves stay.

    A file still in an ingested folder comes back at that folder's next ingest: delete or move it
    first. While `appliance serve` holds the store, the server does the removal."""
    from appliance.backends.store import StoreLocked
    from appliance.cli.handover import remove_through
    from appliance.handover import find
    from ingest.points import doc_id_of

    services = _services(config_file, data_dir)
    try:
        targets: dict[str, int] = {}
        missing: list[str] = []
        for given in paths:
            found = list(services.manifest.under(str(given.absolute())))
            if not found:
                missing.append(str(given))
            targets.update({rec.path: len(rec.chunk_ids) for rec in found})
        for path in missing:
            click.echo(f"not indexed: {path}", err=True)

        def remove_here() -> None:
            from appliance.handover import os_actor

            for path in targets:
                services.ingest_pipeline.remove(path)
                services.audit.record("delete", os_actor(), path=path, chunks=targets[path])

        def run() -> None:
            try:
                remove_here()
            except StoreLocked:
                server = find(services.settings.data_dir)
                if server is None:
                    raise
                remove_through(server, [doc_id_of(p) for p in targets])

        _fail_cleanly(run)
    finally:
        services.close()
    for path, chunks in sorted(targets.items()):
        click.echo(f"removed  {path} ({chunks} chunks)")
    sys.exit(1 if missing else 0)


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON list.")
@settings_options
def doctor_command(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Check settings, models, store, dimensions, disk space and egress switches; exit 1 if one fails."""
    from appliance.ops.doctor import checks_to_json, render_table, run_checks, worst

    services = _services(config_file, data_dir)
    try:
        checks = run_checks(services, config_file)
    finally:
        services.close()
    click.echo(json.dumps(checks_to_json(checks)) if as_json else render_table(checks))
    sys.exit(1 if worst(checks) == "fail" else 0)


@main.group("db")
def db_group() -> None:
    """The schema of the appliance's own tables (users, keys, conversations, manifest)."""


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print each store as a JSON object.")
@settings_options
def db_status(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Each store's schema revision against the newest; exit 1 if one is behind (`appliance db upgrade`)."""
    from appliance.ops.schema import status

    rows = _fail_cleanly(lambda: status(_settings(config_file, data_dir)))
    _print_schema(rows, as_json)
    sys.exit(0 if all(r.current for r in rows) else 1)


@db_group.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print each store as a JSON object.")
@settings_options
def db_upgrade(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Bring every store's tables to the newest schema (a store also upgrades itself when opened)."""
    from appliance.ops.schema import upgrade_all

    _print_schema(_fail_cleanly(lambda: upgrade_all(_settings(config_file, data_dir))), as_json)


def _print_schema(rows: list[Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"store": r.store, "where": r.where, "revision": r.revision, "head": r.head,
                                "current": r.current} for r in rows]))
        return
    for r in rows:
        state = "current" if r.current else f"behind (newest {r.head})"
        click.echo(f"{r.store:<14} {r.revision or '-':<20} {state:<30} {r.where}")


@main.command("bundle")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--python", "python", default=None, metavar="PATH",
              help="The x86-64 Linux Python 3.11 to build for (default: this one); its pip builds every wheel.")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Also save the container images of deploy/ (where docker or podman runs).")
def bundle_command(out_dir: Path, python: str | None, images: bool) -> None:
    """Everything an air-gapped site needs, in OUT_DIR: wheelhouse (models inside), install.sh,
    manifest.json and SHA256SUMS; run on a machine that reaches the package registries."""
    from appliance.ops.bundle import BundleError, build_bundle

    try:
        report = build_bundle(out_dir, python, images, log=lambda line: click.echo(line, err=True))
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{report.out}: {report.wheels} wheels, {len(report.images)} images, {report.bytes / 1e6:.0f} MB "
               f"({report.seconds:.0f} s). On the offline machine: {report.out}/install.sh [TARGET]")


@main.group("store")
def store_group() -> None:
    """Move the vector store between the embedded engine and a Qdrant server."""


@store_group.command("migrate")
@click.option("--to", "target_config", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML settings whose `store:` block names the target (e.g. a Qdrant server).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: when a terminal].")
@settings_options
def store_migrate(target_config: Path, progress: bool | None, config_file: Path | None,
                  data_dir: Path | None) -> None:
    """Copy every chunk from this store to the one in --to (ids kept: a re-run overwrites, never duplicates).

    Then point `store:` of your settings at the target and keep the same data_dir (it holds the manifest).
    Stop `appliance serve` first when the source is the embedded store."""
    from appliance.backends.store import build_store
    from appliance.ops.migrate import MigrationError, migrate
    from appliance.settings import SettingsError, load_settings

    services = _services(config_file, data_dir)
    try:
        target_settings = load_settings(target_config, {"data_dir": services.settings.data_dir})
    except SettingsError as exc:
        services.close()
        raise click.ClickException(str(exc)) from None
    if target_settings.store == services.settings.store:
        services.close()
        raise click.ClickException("--to names the same store as the current settings")
    show = sys.stderr.isatty() if progress is None else progress

    def run() -> int:
        source = services.store
        target = build_store(target_settings.store, target_settings.store_dir, services.embedding.dimension)
        try:
            total = source.count()
            if not show:
                return migrate(source, target)
            from tqdm import tqdm

            with tqdm(total=total, unit="chunk", file=sys.stderr, desc="migrate", dynamic_ncols=True) as bar:
                return migrate(source, target, progress=bar.update)
        finally:
            target.close()

    try:
        copied = _fail_cleanly(run)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"{copied} chunks copied to the {target_settings.store.provider} store "
               f"({_store_location(target_settings)}).")


@main.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@settings_options
def backup_command(dest: Path, config_file: Path | None, data_dir: Path | None) -> None:
    """Copy the store's chunks, the manifest, users, conversations, keys, feedback, audit trail and
    uploads into DEST (a new folder), each file with its SHA-256. Stop `appliance serve` first when
    the store is the embedded one (it holds the store open)."""
    from appliance.ops.backup import BackupError, backup

    services = _services(config_file, data_dir)
    try:
        report = _fail_cleanly(lambda: backup(services, dest))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"{dest}: {report.points} chunks and {len(report.files)} files ({report.seconds:.1f} s).")


@main.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@settings_options
def restore_command(src: Path, config_file: Path | None, data_dir: Path | None) -> None:
    """Restore a backup into this data directory (with no documents yet) and an empty collection;
    every file's checksum is checked first. Nothing is parsed or embedded again."""
    from appliance.ops.backup import BackupError, restore

    services = _services(config_file, data_dir)
    try:
        report = _fail_cleanly(lambda: restore(services, src))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"restored {report.points} chunks and the databases from {src} ({report.seconds:.1f} s).")


def _store_location(settings: Any) -> str:
    store = settings.store
    where = getattr(store, "url", None) or getattr(store, "path", None)
    return str(where or settings.store_dir / store.collection)


def _register() -> None:
    from appliance.cli.access import COMMANDS
    from appliance.cli.keys import keys_group
    from appliance.cli.mcp import mcp_command

    for command in (*COMMANDS, keys_group, mcp_command):
        main.add_command(command)


_register()


def ingest_main() -> None:
    """The `ingest` console script: the same as `appliance ingest`."""
    _private_files()
    ingest_command(prog_name="ingest")


if __name__ == "__main__":
    main()
