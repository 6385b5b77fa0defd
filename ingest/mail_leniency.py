"""An e-mail keeps its text whatever its attachments or its declared encoding do.

unstructured reads each attachment of an .eml/.msg with its own partitioners, and skips one only on an
ImportError, an unsupported type or a missing file: any other error loses the whole message. An .mp3
attached to a mail (unstructured-example-docs' mime-attach-mp3.eml) raised "SpeechToText agent ...
failed" and the mail was reported failed. Here every failing attachment is skipped instead, and the
skipped ones are named in the file's notes.

oxmsg decodes an Outlook message's 8-bit strings with the code page the message declares; a message that
declares UTF-8 but holds Windows-1252 (Apache POI's ASCII_UTF-8_CP1252_LCID1031.msg, a German Outlook)
raised UnicodeDecodeError. Here the string falls back to the message's other code page, then Windows-1252.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

AUDIO_VIDEO = frozenset({".mp3", ".wav", ".m4a", ".flac", ".ogg", ".aac", ".wma", ".mp4", ".mov", ".avi", ".mkv",
                         ".webm", ".wmv"})
SKIPPED = re.compile(r"Skipping attachment (?P<name>.*?): (?P<reason>.*)", re.S)
_applied = False


@contextmanager
def lenient_mail(notes: list[str]) -> Iterator[None]:
    """While the block parses a message: failing attachments are skipped, each noted in `notes`."""
    _apply_once()
    collector = _SkippedAttachments()
    logger = logging.getLogger("unstructured")
    # The warnings are made whatever the root logger's level (the CLI sets ERROR to keep parsers quiet), and
    # kept from the console: they reach the reader as notes.
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(collector)
    try:
        yield
    finally:
        logger.removeHandler(collector)
        logger.setLevel(level)
        logger.propagate = propagate
        notes.extend(collector.notes)


class _SkippedAttachments(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.notes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = SKIPPED.match(record.getMessage())
        if found is None:
            return
        self.notes.append(f"attachment {found['name']} skipped: {_why(found['name'], found['reason'])}")


def _why(name: str, error: str) -> str:
    """The reason in the reader's words: unstructured's ones name missing extras and transcription agents."""
    if Path(name).suffix.lower() in AUDIO_VIDEO or "SpeechToText" in error:
        return "audio and video are not transcribed"
    if "partition_image" in error:
        return "images attached to a message are not read by OCR"
    if "is not available because one or more dependencies are not installed" in error:
        return "attachments of this type are not read"  # e.g. PDFs: unstructured's PDF extra is not installed
    if "UnsupportedFileFormatError" in error:
        return "unsupported file type"
    # Anything else: the error's kind only (its text may hold a library's internals: object addresses, XML
    # parser messages). The file's own parse, when it is ingested alone, gives the full reason.
    kind = error.split(":", 1)[0].strip()
    return f"could not be read ({kind})" if kind.isidentifier() else "could not be read"


def _apply_once() -> None:
    global _applied
    if _applied:
        return
    import unstructured.partition.email as email_partition
    import unstructured.partition.msg as msg_partition
    from oxmsg import properties
    from oxmsg.util import lazyproperty

    # Both modules test `isinstance(error, EXPECTED_ATTACHMENT_ERRORS)` at call time: any Exception (never
    # a KeyboardInterrupt or SystemExit) now skips the attachment with unstructured's own warning.
    for module in (email_partition, msg_partition):
        module.EXPECTED_ATTACHMENT_ERRORS = (Exception,)  # type: ignore[attr-defined]
    properties.String8Property.value = lazyproperty(_string8_value)  # type: ignore[assignment]
    _applied = True


def _string8_value(prop: Any) -> str:
    """oxmsg's String8Property.value, falling back when the declared code page does not fit the bytes."""
    from oxmsg.domain import constants

    raw: bytes = prop._storage.property_stream_bytes(prop.pid, prop.ptyp)
    declared = prop._body_encoding if prop.pid == constants.PID_BODY else prop._str_prop_encoding
    for encoding in dict.fromkeys((declared, prop._str_prop_encoding, "cp1252")):
        try:
            return raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("cp1252", errors="replace")
