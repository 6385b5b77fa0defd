"""An answer as the chat shows it: the model's and the documents' text made inert, citations as links that
open the sources panel (with a preview on hover), figures no passage states underlined, and how well the
answer is supported said in words."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.rag import Answer, Source

# An inline SVG, not "ⓘ": Debian's fonts (DejaVu) have no such glyph, and the reader saw an empty box.
# Sized in percentages: the chat's sanitizer drops viewBox (and role, aria-label).
INFO_ICON = ("<svg class='info-icon' width='1em' height='1em'>"
             "<circle cx='50%' cy='50%' r='43%' fill='none' stroke='currentColor' stroke-width='10%'/>"
             "<rect x='44%' y='42%' width='12%' height='34%' fill='currentColor'/>"
             "<circle cx='50%' cy='27%' r='7%' fill='currentColor'/></svg>")
UNGROUNDED = f"**{INFO_ICON} No document answers this.**"
# How well an answer is supported, in words (Answer.match, Answer.unsupported). Said in the text, not
# only in a tooltip: the chat's sanitizer may drop attributes, and a phone has no hover.
WEAK_NOTE = ("<small class='match-weak'>Weak match: the documents only partly cover this question. "
             "Check the sources before relying on the answer.</small>")
UNSUPPORTED_TIP = "No passage given to the model states this figure"
UNSUPPORTED_NOTE = ("<small class='unsupported-note'>Underlined figures are not stated in the passages "
                    "the answer was given: check them in the sources.</small>")
PREVIEW_CHARS = 220  # of a cited passage, shown on hovering its citation
STOPPED = "[stopped]"  # ends a saved answer that the reader stopped (what was written is kept)
_MARKER = re.compile(r"\[(\d{1,3})\]")


def inert(text: str) -> str:
    """Text from documents or the model, made safe to render as Markdown: no HTML, and no image
    syntax, so a passage like ![](http://host/?q=...) can never make a browser fetch anything."""
    return html.escape(text).replace("![", "!&#91;")  # an entity is never Markdown syntax


def link_citations(text: str, message: int, numbers: set[int] | dict[int, str]) -> str:
    """[n] markers of the model's answer (already made inert) as links that open source n of this
    message in the panel; a marker naming no source stays plain text. With previews (number → the
    source's place and first words), hovering a link shows them, as Copilot does."""
    previews = numbers if isinstance(numbers, dict) else {}

    def link(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return f"[[{n}]]({cite_target(message, n, previews.get(n, ''))})" if n in numbers else m.group(0)

    return _MARKER.sub(link, text)


def cite_target(message: int, n: int, preview: str) -> str:
    """A citation link's Markdown target, with the preview as its title (escaped: document text)."""
    if not preview:
        return f"#cite-{message}-{n}"
    title = html.escape(" ".join(preview.split()), quote=True).replace("\\", "&#92;").replace(")", "&#41;")
    return f'#cite-{message}-{n} "{title}"'


def source_preview(source: Source) -> str:
    """What hovering a citation shows: where the passage is, and its first words."""
    words = " ".join(source.text.split())
    return f"{source.location}: {words[:PREVIEW_CHARS]}{'…' if len(words) > PREVIEW_CHARS else ''}"


def mark_unsupported(text: str, figures: Sequence[str]) -> str:
    """The answer's figures that no passage it was given states (appliance/answer_check.py), underlined
    in its (already inert) text. One pass over all of them: a figure inside a longer one is not
    marked twice."""
    wanted = sorted({html.escape(f) for f in figures if f.strip()}, key=len, reverse=True)
    if not wanted:
        return text
    # Whole figures only: not the 12 of 2012, nor a citation marker's number.
    pattern = re.compile(r"(?<![\w.,\[])(?:" + "|".join(re.escape(f) for f in wanted) + r")(?![\w\]]|[.,]\d)")
    return pattern.sub(lambda m: f"<u class='unsupported' title='{UNSUPPORTED_TIP}'>{m.group(0)}</u>", text)


def stopped_markdown(saved: str) -> str:
    """A stopped answer as the chat shows it: the words written before Stop, then a quiet mark."""
    words = saved.removesuffix(STOPPED).rstrip()
    mark = "<small class='stopped'>Stopped before the answer was finished.</small>"
    return f"{inert(words)}\n\n{mark}" if words else mark


def answer_markdown(answer: Answer, message: int) -> str:
    if not answer.grounded:
        closest = " The closest passages are listed under Sources." if answer.sources else ""
        return f"{UNGROUNDED} {inert(answer.text)}{closest}"
    previews = {s.number: source_preview(s) for s in answer.sources}
    body = link_citations(mark_unsupported(inert(answer.text), answer.unsupported), message, previews)
    if answer.match == "weak":
        body = f"{WEAK_NOTE}\n\n{body}"
    if answer.unsupported:
        body += f"\n\n{UNSUPPORTED_NOTE}"
    labels = " · ".join(f"[[{s.number}]]({cite_target(message, s.number, previews[s.number])}) {inert(s.location)}"
                        for s in answer.sources)
    return f"{body}\n\n<small>Sources: {labels}</small>" if labels else body
