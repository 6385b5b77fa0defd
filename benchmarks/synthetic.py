"""A synthetic file share: N files of mixed formats and sizes, deterministic for a given seed.

Formats and their shares follow what office shares hold (text and Markdown notes, HTML pages,
Word documents, PDFs, mails, CSV exports); sizes are mostly small with a long tail. Every file's
text is drawn from a vocabulary with its own random sentences, so no two files are alike
(duplicates would be copied, not embedded, and flatter the numbers).
"""

from __future__ import annotations

import random
import zlib
from email.message import EmailMessage
from pathlib import Path

_VOCABULARY = """pump valve seal pressure line inspection maintenance report quarterly revenue budget forecast
customer contract invoice payment supplier delivery warehouse inventory shipment audit policy employee leave
training safety incident vendor project milestone schedule risk approval request network server backup storage
access password account license renewal meeting agenda minutes decision action owner deadline review quality
defect release version support ticket escalation region sales target margin cost price discount order return
warranty repair"""
WORDS = tuple(_VOCABULARY.split())
# (suffix, weight): the mix of the share
FORMATS = (("txt", 25), ("md", 20), ("html", 15), ("docx", 15), ("pdf", 10), ("eml", 10), ("csv", 5))
# (paragraphs, weight): most files are a few paragraphs, a few are long
SIZES = ((1, 60), (3, 28), (12, 10), (60, 2))


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 18))
    return f"{' '.join(words).capitalize()} {rng.randint(1, 9999)}."


def _paragraphs(rng: random.Random, n: int) -> list[str]:
    return [" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(n)]


def _pdf(paragraphs: list[str]) -> bytes:
    """A PDF with one page per 8 paragraphs (Helvetica, a line per paragraph), written by hand."""
    pages = [paragraphs[i:i + 8] for i in range(0, len(paragraphs), 8)]
    # 1 catalog, 2 page tree, 3 font, then per page: its content stream and the page itself.
    page_numbers = [5 + 2 * k for k in range(len(pages))]
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % n for n in page_numbers)
               + b"] /Count %d >>" % len(pages),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for k, page in enumerate(pages):
        lines = b"".join(b"(" + line[:180].replace("(", "").replace(")", "").encode("latin-1", "replace")
                         + b") Tj T* " for line in page)
        stream = zlib.compress(b"BT /F1 9 Tf 11 TL 40 750 Td " + lines + b"ET")
        objects.append(b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % (4 + 2 * k))
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _write(path: Path, kind: str, title: str, paragraphs: list[str], rng: random.Random) -> None:
    if kind == "txt":
        path.write_text(title + "\n\n" + "\n\n".join(paragraphs) + "\n")
    elif kind == "md":
        body = "\n\n".join(f"## Part {i + 1}\n\n{p}" if i % 4 == 0 else p for i, p in enumerate(paragraphs))
        path.write_text(f"# {title}\n\n{body}\n")
    elif kind == "html":
        body = "".join((f"<h2>Part {i + 1}</h2>" if i % 4 == 0 else "") + f"<p>{p}</p>"
                       for i, p in enumerate(paragraphs))
        path.write_text(f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>")
    elif kind == "docx":
        import docx

        document = docx.Document()
        document.add_heading(title, 1)
        for p in paragraphs:
            document.add_paragraph(p)
        document.save(str(path))
    elif kind == "pdf":
        path.write_bytes(_pdf([title, *paragraphs]))
    elif kind == "eml":
        message = EmailMessage()
        message["From"] = f"user{rng.randint(1, 500)}@example.com"
        message["To"] = "team@example.com"
        message["Subject"] = title
        message.set_content("\n\n".join(paragraphs))
        path.write_bytes(bytes(message))
    elif kind == "csv":
        rows = ["id,item,region,amount,note"] + [
            f"{i},{rng.choice(WORDS)},{rng.choice(WORDS)},{rng.randint(1, 99999)},{rng.choice(WORDS)}"
            for i in range(len(paragraphs) * 5)]
        path.write_text("\n".join(rows) + "\n")


def make_share(root: Path, files: int, seed: int = 7) -> list[Path]:
    """Write `files` files under root, 50 to a folder; returns their paths."""
    rng = random.Random(seed)
    kinds = [k for k, _ in FORMATS]
    kind_weights = [w for _, w in FORMATS]
    sizes = [n for n, _ in SIZES]
    size_weights = [w for _, w in SIZES]
    made = []
    for i in range(files):
        kind = rng.choices(kinds, kind_weights)[0]
        n = rng.choices(sizes, size_weights)[0]
        folder = root / f"dept-{i % 20:02d}" / f"folder-{i // 1000:02d}-{(i // 50) % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"doc-{i:06d}.{kind}"
        _write(path, kind, f"Document {i}: {_sentence(rng)}", _paragraphs(rng, n), rng)
        made.append(path)
    return made


def change(paths: list[Path], fraction: float, seed: int = 11) -> list[Path]:
    """Rewrite a fraction of the plain-text files (a new paragraph at the end); returns them."""
    rng = random.Random(seed)
    texts = [p for p in paths if p.suffix in (".txt", ".md")]
    chosen = rng.sample(texts, max(1, int(len(paths) * fraction)))
    for path in chosen:
        path.write_text(path.read_text() + "\n\n" + " ".join(_paragraphs(rng, 1)) + "\n")
    return chosen
