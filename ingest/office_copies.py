"""Copies of Office files that python-docx / python-pptx (under unstructured) would misread, put right.

- Content controls (`w:sdt`: a template's title, author and date fields, form fields, cover pages) are
  skipped by unstructured's .docx reader, so their text was lost (Apache POI's Bug54771a.docx: only its
  footer came out). The copy has each control replaced by its content, which Word shows the same way.
- Macro-enabled, template and slide-show variants (.docm .dotx .dotm .pptm .ppsx .ppsm .potx .potm) are
  the same XML with another main content type, which python-docx and python-pptx refuse; the copy
  declares the plain document's. Macros are never run: only the XML is read.

Each copy is written next to nothing the user owns (a private temporary folder) and removed after parsing.
A file that needs neither change is parsed in place.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAIN_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
}
# A main part's content type that is one of the variants' (macro-enabled, template, slide show, add-in).
VARIANT_MAIN = re.compile(
    rb'ContentType="application/vnd\.(?:ms-word\.(?:document|template)\.macroEnabled\.main\+xml'
    rb'|openxmlformats-officedocument\.wordprocessingml\.template\.main\+xml'
    rb'|ms-powerpoint\.(?:presentation|slideshow|template|addin)\.macroEnabled\.main\+xml'
    rb'|openxmlformats-officedocument\.presentationml\.(?:slideshow|template)\.main\+xml'
    rb'|ms-excel\.(?:sheet|template)\.macroEnabled\.main\+xml'
    rb'|openxmlformats-officedocument\.spreadsheetml\.template\.main\+xml)"')
WORD_PARTS = re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml")
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
CONTENT_TYPES = "[Content_Types].xml"


@contextmanager
def readable_copy(path: Path, file_type: str) -> Iterator[Path]:
    """`path` itself, or a put-right copy of it while the block runs (see the module's note)."""
    if file_type not in MAIN_TYPES:
        yield path
        return
    try:
        with zipfile.ZipFile(path) as archive:
            changed = _changed_members(archive, file_type)
    except (zipfile.BadZipFile, OSError, KeyError):
        yield path  # damaged: the parser names the problem
        return
    if not changed:
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="appliance-office-"))
    try:
        copy = folder / f"copy.{file_type}"
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                data = changed.get(info.filename)
                if data is not None:
                    target.writestr(info, data)
                    continue
                with source.open(info) as member, target.open(info, "w") as out:  # streamed: media can be large
                    shutil.copyfileobj(member, out, 1 << 20)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _changed_members(archive: zipfile.ZipFile, file_type: str) -> dict[str, bytes]:
    """The members whose bytes the copy replaces: the content types of a variant, Word parts holding controls."""
    changed: dict[str, bytes] = {}
    types = archive.read(CONTENT_TYPES)
    plain = VARIANT_MAIN.sub(f'ContentType="{MAIN_TYPES[file_type]}"'.encode(), types)
    if plain != types:
        changed[CONTENT_TYPES] = plain
    if file_type == "docx":
        for name in archive.namelist():
            if WORD_PARTS.fullmatch(name):
                xml = archive.read(name)
                if b"<w:sdt>" in xml or b"<w:sdt " in xml:
                    changed[name] = unwrap_content_controls(xml)
    return changed


def unwrap_content_controls(xml: bytes) -> bytes:
    """The part with every content control (w:sdt, nested ones too) replaced by its content's elements; the
    part as it was when lxml refuses it (python-docx then reads it, or names the problem)."""
    from lxml import etree

    try:
        root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return xml
    sdt, content = f"{{{W}}}sdt", f"{{{W}}}sdtContent"
    # Children before parents (reversed document order), each parent's list rebuilt once: linear in the
    # part's size, where removing and inserting one control at a time was quadratic (a 700 KB file of a
    # million controls held a worker for its whole timeout).
    for element in reversed(list(root.iter())):
        if not any(child.tag == sdt for child in element):
            continue
        children: list[Any] = []
        for child in element:
            if child.tag != sdt:
                children.append(child)
                continue
            inner = child.find(content)
            children.extend(list(inner) if inner is not None else [])
        element[:] = children
    result: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
    return result
