"""What a document says about itself: title, author, dates, an e-mail's headers, its page count.

Read from the file's own properties (PDF info, Office core properties, HTML <title> and <meta>, MIME
headers), never guessed from the text, except the title: the properties' title, else the first
heading, else the file name. Every reader is best-effort: a broken property loses that property, never
the file.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import re
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_FIELD = 300  # characters kept of any one property (a title is a line, not a paragraph)
# Titles that document tools write by default: not the document's title.
_PLACEHOLDER = re.compile(r"^(untitled|microsoft (word|powerpoint|excel) - .*|document\d*|presentation\d*|book\d*|"
                          r"slide \d+|powerpoint presentation|title|title slide|click to add title|"
                          r"(https?|file|ftp)://\S*|www\.\S*)$", re.IGNORECASE)


@dataclass
class DocumentMeta:
    title: str = ""
    author: str = ""
    created: str = ""  # ISO 8601 date-time (UTC) or date, as the document states it
    modified: str = ""
    email_from: str = ""
    email_to: str = ""
    email_date: str = ""
    subject: str = ""

    def to_payload(self) -> dict[str, Any]:
        """The non-empty fields, for the chunk payload and the manifest."""
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> DocumentMeta:
        names = cls.__dataclass_fields__
        return cls(**{k: str(v) for k, v in data.items() if k in names and v})

    @property
    def date(self) -> str:
        """The date a reader would put on the document: sent, else last modified, else created (YYYY-MM-DD)."""
        return (self.email_date or self.modified or self.created)[:10]


def _clean(value: object) -> str:
    text = " ".join(str(value or "").replace("\x00", "").split())
    return text[:MAX_FIELD]


def _title(value: object) -> str:
    text = _clean(value)
    return "" if _PLACEHOLDER.match(text) else text


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0).isoformat()


def pdf_date(value: str) -> str:
    """A PDF date (D:YYYYMMDDHHmmSS+HH'mm') as ISO 8601; "" when it is not one."""
    m = re.match(r"^(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?", value.strip())
    if not m:
        return ""
    year, month, day, hour, minute, second = (int(g) if g else d for g, d in zip(m.groups(), (0, 1, 1, 0, 0, 0),
                                                                                   strict=True))
    try:
        return _iso(datetime(year, month, day, hour, minute, second))
    except ValueError:
        return ""


def _date(value: str) -> str:
    """An ISO-like date of a property (Office's W3CDTF), normalised; "" when it is not one."""
    value = value.strip()
    try:
        return _iso(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return ""


def from_pdf(pdf: Any) -> DocumentMeta:
    """From an open pypdfium2 PdfDocument's info dictionary."""
    try:
        info = pdf.get_metadata_dict(skip_empty=True)
    except Exception:  # a broken info dictionary
        return DocumentMeta()
    return DocumentMeta(title=_title(info.get("Title")), author=_clean(info.get("Author")),
                        created=pdf_date(str(info.get("CreationDate", ""))),
                        modified=pdf_date(str(info.get("ModDate", ""))))


_CORE = {"title": "{http://purl.org/dc/elements/1.1/}title", "author": "{http://purl.org/dc/elements/1.1/}creator",
         "created": "{http://purl.org/dc/terms/}created", "modified": "{http://purl.org/dc/terms/}modified"}
_ODF = {"title": "{http://purl.org/dc/elements/1.1/}title",
        "author": "{urn:oasis:names:tc:opendocument:xmlns:meta:1.0}initial-creator",
        "created": "{urn:oasis:names:tc:opendocument:xmlns:meta:1.0}creation-date",
        "modified": "{http://purl.org/dc/elements/1.1/}date"}


def from_zip_properties(path: Path) -> DocumentMeta:
    """Office Open XML (docProps/core.xml) or OpenDocument (meta.xml) properties."""
    from lxml import etree

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            member, tags = ("docProps/core.xml", _CORE) if "docProps/core.xml" in names else ("meta.xml", _ODF)
            if member not in names:
                return DocumentMeta()
            info = z.getinfo(member)
            if info.file_size > 1 << 20:  # a properties part is a few KB; a bigger one is not read
                return DocumentMeta()
            root = etree.fromstring(z.read(member), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except (zipfile.BadZipFile, OSError, etree.XMLSyntaxError, KeyError):
        return DocumentMeta()
    found = {key: _clean(el.text) for key, tag in tags.items() if (el := root.find(f".//{tag}")) is not None}
    return DocumentMeta(title=_title(found.get("title")), author=found.get("author", ""),
                        created=_date(found.get("created", "")), modified=_date(found.get("modified", "")))


def from_html(path: Path) -> DocumentMeta:
    """<title>, and the author and dates of <meta> tags, from the head of an HTML file."""
    from lxml import html

    try:
        with path.open("rb") as f:
            head = f.read(256 * 1024)  # the <head> is at the start; the body is not needed
        doc = html.fromstring(head)
    except (OSError, ValueError, TypeError):
        return DocumentMeta()
    metas = {(m.get("name") or m.get("property") or "").lower(): m.get("content") or "" for m in doc.iter("meta")}
    titles = doc.xpath("//title/text()")
    return DocumentMeta(title=_title(titles[0] if titles else metas.get("og:title", "")),
                        author=_clean(metas.get("author", "")),
                        created=_date(metas.get("dcterms.created", "") or metas.get("article:published_time", "")),
                        modified=_date(metas.get("dcterms.modified", "") or metas.get("article:modified_time", "")))


def from_email(path: Path) -> DocumentMeta:
    """From, To, Date and Subject of a MIME message (.eml); the subject is its title."""
    try:
        with path.open("rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        headers = {k: str(msg.get(k, "") or "") for k in ("From", "To", "Date", "Subject")}
    except Exception:  # a malformed header: the headers are best-effort, the body is parsed anyway
        return DocumentMeta()
    sent = ""
    with contextlib.suppress(TypeError, ValueError, IndexError):
        sent = _iso(email.utils.parsedate_to_datetime(headers["Date"])) if headers["Date"] else ""
    subject = _clean(headers["Subject"])
    return DocumentMeta(title=subject, email_from=_clean(headers["From"]), email_to=_clean(headers["To"]),
                        email_date=sent, subject=subject)


def from_elements_metadata(meta: Any) -> DocumentMeta:
    """What unstructured reports of a message it parsed itself (.msg): sender, recipients, subject."""
    sent_from = getattr(meta, "sent_from", None) or []
    sent_to = getattr(meta, "sent_to", None) or []
    subject = _clean(getattr(meta, "subject", None))
    return DocumentMeta(title=subject, subject=subject, email_from=_clean(", ".join(sent_from)),
                        email_to=_clean(", ".join(sent_to)))


def read(path: Path, file_type: str) -> DocumentMeta:
    """The properties a file of this type carries (PDFs: `from_pdf`, on the document already open)."""
    if file_type in {"docx", "pptx", "xlsx", "odt", "epub"}:
        return from_zip_properties(path)
    if file_type == "html":
        return from_html(path)
    if file_type == "eml":
        return from_email(path)
    return DocumentMeta()


def with_title(meta: DocumentMeta, first_heading: str | None, path: Path) -> DocumentMeta:
    """The title: the properties', else the first heading, else the file name without its extension."""
    if not meta.title:
        meta.title = _title(first_heading) or name_title(path)
    return meta


def name_title(path: Path) -> str:
    """The title a file gets from its name alone (the last fallback of `with_title`)."""
    return _clean(path.stem.replace("_", " "))


def renamed(meta: dict[str, Any], donor: Path, path: Path) -> dict[str, Any]:
    """The metadata of a copy of a file under another name: a title that was the donor's name is the copy's."""
    if meta.get("title") == name_title(donor):
        return {**meta, "title": name_title(path)}
    return dict(meta)
