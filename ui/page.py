"""What the chat page carries besides its components: the theme, the CSS and the few lines of
JavaScript (keyboard shortcuts, citation links). All inline: the page fetches nothing from elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr


def theme() -> gr.themes.Base:
    import gradio as gr

    # System fonts only: the default theme fetches fonts from the internet, which an
    # air-gapped page must never do.
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


CSS = """
#source-view .passage { max-height: 22rem; overflow-y: auto; line-height: 1.5; }
#source-view mark { background: #fde68a; color: #111827; padding: 0 .1em; }
#source-view img { width: 100%; border: 1px solid var(--border-color-primary); margin-top: .5rem; }
#source-view a, .cite { color: var(--link-text-color); text-decoration: underline; }
#no-documents { border-left: 4px solid #b45309; padding-left: .6rem; }
#cite-target { display: none !important; }
@media (max-width: 700px) {
  #chat { height: 60vh !important; }
  #conversations-column { order: 3; }  /* on a phone: the chat first, then its sources, then the list */
  .gradio-container { padding: 4px !important; }
}
"""

# Esc stops the answer being written; a click on a citation [n] in an answer opens that source in
# the panel (the hidden #cite-target box carries "turn:n" to the server). Enter sends and
# Shift+Enter starts a new line: the question box does that itself.
JS = """
<script>
(() => {
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { document.querySelector('#stop-answer')?.click(); }
  });
  document.addEventListener('click', (e) => {
    const link = e.target.closest && e.target.closest('a[href^="#cite-"]');
    if (!link) return;
    e.preventDefault();
    e.stopPropagation();
    const box = document.querySelector('#cite-target textarea, #cite-target input');
    if (!box) return;
    box.value = link.getAttribute('href').slice('#cite-'.length) + ':' + Date.now();
    box.dispatchEvent(new Event('input', { bubbles: true }));
  }, true);
})();
</script>
"""
