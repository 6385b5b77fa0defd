"""What the chat page carries besides its components: the theme, the CSS and the few lines of
JavaScript (keyboard shortcuts, citation links, plain-text copies, the opened passage scrolled into
view). All inline: the page fetches nothing from elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr


def theme() -> gr.themes.Base:
    import gradio as gr

    # System fonts only: the default theme fetches fonts from the internet, which an
    # air-gapped page must never do.
    # Colours darkened to WCAG AA (4.5:1 for text) where Gradio's defaults fall short, measured by
    # the page's contrast test in both themes: white on orange-500 buttons is 2.8:1 (orange-700:
    # 5.2), white on red-500 3.8:1 (red-700: 6.5), grey-400 placeholders and "- or -" 1.9:1 on white.
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    ).set(
        button_primary_background_fill="*primary_700",
        button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover="*primary_800",
        button_primary_background_fill_hover_dark="*primary_800",
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_dark="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_background_fill_hover_dark="#991b1b",
        input_placeholder_color="*neutral_500",
        input_placeholder_color_dark="*neutral_400",
        body_text_color_subdued="*neutral_600",
        body_text_color_subdued_dark="*neutral_400",
    )


CSS = """
/* The selected tab's label is in the accent colour, orange-500: 2.8:1 on white. */
:root { --appliance-accent-text: #c2410c; }
.dark { --appliance-accent-text: #fb923c; }
button[role="tab"][aria-selected="true"] { color: var(--appliance-accent-text) !important; }
#source-view .passage { max-height: 14rem; overflow-y: auto; line-height: 1.5; }
/* A long file name without spaces (report_2024_Q2_final.pdf) breaks anywhere rather than being cut off. */
#source-view, #source-pick label, #conversations label, #chat .message-content { overflow-wrap: anywhere; }
#source-view mark { background: #fde68a; color: #111827; padding: 0 .1em; }
#source-view img { width: 100%; border: 1px solid var(--border-color-primary); }
#source-view figure.source-page { margin: .5rem 0 0; }
#source-view figcaption { font-size: .85em; }
#source-view .chunk { margin: 0 0 .6em; }
#source-view .chunk > mark { display: block; }  /* the whole cited chunk, a table too */
#source-view table.passage-table {
  border-collapse: collapse; font-size: .9em; margin: .2em 0; display: block; overflow-x: auto;
}
#source-view table.passage-table th, #source-view table.passage-table td {
  border: 1px solid var(--border-color-primary); padding: .15em .4em; text-align: left;
}
#source-view a, .cite { color: var(--link-text-color); text-decoration: underline; }
#no-documents { border-left: 4px solid #b45309; padding-left: .6rem; }
#chat svg.info-icon { display: inline-block; width: 1em; height: 1em; margin: 0 .15em 0 0; vertical-align: -0.15em; }
#cite-target { display: none !important; }
#chat button[data-copied] { outline: 2px solid var(--color-accent); }  /* copied: the page's own copy */
#drawer-toggle { display: none; }
#conversations { max-height: 55vh; overflow-y: auto; }
@media (max-width: 700px) {
  #chat { height: 60vh !important; }
  .gradio-container { padding: 4px !important; }
  /* The header full width, the title above who is signed in (not half the width beside an empty column). */
  #header-row { flex-direction: column; gap: 0; }
  #header-row > * { min-width: 100% !important; }
  /* The conversations are a drawer over the page, opened by the button above the chat. */
  #drawer-toggle { display: inline-flex; align-self: flex-start; width: auto; }
  #conversations-column { display: none; }
  #conversations-column.drawer-open {
    display: flex; position: fixed; inset: 0 15% 0 0; z-index: 1000; overflow-y: auto; padding: .75rem;
    background: var(--background-fill-primary); box-shadow: 0 0 0 100vmax rgba(0, 0, 0, .45);
  }
}
"""

# Esc stops the answer being written (the question box's Stop button, shown in place of Send while
# an answer streams); Enter then does nothing, so a question typed meanwhile waits in the box for
# the answer to end. A click on a citation [n] in an answer opens that source in the panel (the
# hidden #cite-target box carries "turn:n" to the server). Enter sends and Shift+Enter starts a new
# line: the question box does that itself.
# The chat's copy buttons copy plain text: Gradio's own copy the messages' Markdown (citation links,
# <small>, HTML entities); these read what the page shows, the sources as a list.
JS = """
<script>
(() => {
  const stopButton = () => document.querySelector('#question .stop-button');
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { stopButton()?.click(); }
  });
  const holdEnter = (e) => {
    if (!(e.key === 'Enter' && !e.shiftKey && e.target.closest && e.target.closest('#question'))) return;
    if (stopButton()) {
      e.preventDefault();
      e.stopImmediatePropagation();
    } else if (e.type === 'keydown') {
      // The question as it was when Enter went down: what is typed before the send reads the box
      // stays in the box (see EMPTY_THE_BOX in ui/chat.py).
      e.target.dataset.sent = e.target.value;
      e.target.dataset.sentAt = String(Date.now());
    }
  };
  document.addEventListener('keydown', holdEnter, true);
  document.addEventListener('keypress', holdEnter, true);
  // On a phone: the conversations drawer opens with its button, and closes when a conversation is
  // chosen, a new one started, or the dimmed page beside it is touched.
  // (The class goes on the column: Gradio scopes the page's CSS to its container, so a body class
  // cannot be matched.)
  document.addEventListener('click', (e) => {
    const t = e.target;
    const drawer = document.querySelector('#conversations-column');
    if (!t.closest || !drawer) return;
    if (t.closest('#drawer-toggle')) { drawer.classList.toggle('drawer-open'); return; }
    if (!drawer.classList.contains('drawer-open')) return;
    if (t.closest('#conversations label') || t.closest('#new-conv') || !t.closest('#conversations-column')) {
      drawer.classList.remove('drawer-open');
    }
  });
  // A phone opens the page at its top (the title and the tabs), not scrolled to the focused box.
  if (window.matchMedia('(max-width: 700px)').matches) {
    const top = () => { document.activeElement?.blur?.(); window.scrollTo(0, 0); };
    const seen = new MutationObserver(() => {
      if (document.querySelector('#question textarea')) { seen.disconnect(); setTimeout(top, 50); }
    });
    seen.observe(document.documentElement, {childList: true, subtree: true});
  }
  // The chat's bin icon starts a new conversation (the one shown stays saved): its label says so.
  new MutationObserver(() => {
    for (const b of document.querySelectorAll('#chat button[aria-label="Clear"]')) {
      b.setAttribute('aria-label', 'New conversation (this one stays saved)');
      b.setAttribute('title', 'New conversation (this one stays saved)');
    }
  }).observe(document.documentElement, {childList: true, subtree: true});
  // "#" typed in the question box (at its start or after a space) opens the scope picker to search
  // folders, documents and types, as Open WebUI does; the "#" itself is not kept in the question.
  document.addEventListener('input', (e) => {
    const box = e.target;
    if (!(box.closest && box.closest('#question')) || e.data !== '#') return;
    const at = box.selectionStart - 1;
    if (at < 0 || box.value[at] !== '#' || (at > 0 && !/\\s/.test(box.value[at - 1]))) return;
    box.value = box.value.slice(0, at) + box.value.slice(at + 1);
    box.dispatchEvent(new Event('input', {bubbles: true}));
    const picker = document.querySelector('#scope-pick input');
    if (picker) { picker.focus(); picker.click(); }
  });
  // The answer stops at its next token, or when the search under way ends (seconds on a busy
  // server): until Send is back, the button says so.
  document.addEventListener('click', (e) => {
    const stop = e.target.closest && e.target.closest('#question .stop-button');
    if (stop) { stop.textContent = 'Stopping…'; }
  });

  const plainMessage = (row) => {
    const content = row.querySelector('.message-content') || row;
    let text = content.innerText.trim();
    const small = [...content.querySelectorAll('small')].find((s) => s.innerText.trim().startsWith('Sources:'));
    if (small) {
      const line = small.innerText.trim();
      const at = text.lastIndexOf(line);
      if (at >= 0) { text = text.slice(0, at).trim(); }
      const items = line.slice('Sources:'.length).split(' · ').map((s) => s.trim()).filter(Boolean);
      text += '\\n\\nSources:\\n' + items.join('\\n');
    }
    return text;
  };
  const plainConversation = () => [...document.querySelectorAll('#chat .message-row')].map((row) =>
    (row.classList.contains('user-row') ? 'Question: ' : 'Answer: ') + plainMessage(row)).join('\\n\\n');
  const copy = async (text) => {
    try { await navigator.clipboard.writeText(text); return; } catch (err) { /* plain HTTP: below */ }
    const area = document.createElement('textarea');
    area.value = text;
    area.style.position = 'fixed';
    area.style.left = '-9999px';
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  };
  document.addEventListener('click', (e) => {
    const button = e.target.closest && e.target.closest('#chat button[aria-label^="Cop"]');
    if (!button) return;
    const all = button.getAttribute('aria-label').includes('conversation');
    const row = all ? null : button.closest('.message-buttons')?.previousElementSibling;
    e.preventDefault();
    e.stopImmediatePropagation();
    copy(all ? plainConversation() : plainMessage(row || button)).then(() => {
      button.setAttribute('data-copied', 'true');
      setTimeout(() => button.removeAttribute('data-copied'), 1500);
    });
  }, true);

  // The opened source shows its cited passage: the passage box (it scrolls on its own) is scrolled
  // to the highlight, which otherwise often sits below its fold; and after a click on a citation or
  // a source, a panel off the screen (on a phone it is under the chat) is scrolled into view.
  let asked = 0, shown = null;
  const bringPanel = () => {
    if (Date.now() - asked > 15000) return;
    asked = 0;
    const panel = document.querySelector('#source-view');
    const r = panel ? panel.getBoundingClientRect() : null;
    if (r && (r.top < 0 || r.top > window.innerHeight * 0.6)) {
      (document.querySelector('#source-pick') || panel).scrollIntoView({ block: 'start', behavior: 'instant' });
    }
  };
  const reveal = () => {
    const mark = document.querySelector('#source-view mark#cited-passage');
    if (!mark || mark === shown) return;  // only a newly opened passage: the reader may scroll it
    shown = mark;
    const box = mark.closest('.passage');
    if (box) {
      const above = parseFloat(getComputedStyle(box).lineHeight) * 2 || 48;  // two lines of context
      box.scrollTop += mark.getBoundingClientRect().top - box.getBoundingClientRect().top - above;
    }
    bringPanel();
  };
  new MutationObserver(() => requestAnimationFrame(reveal)).observe(document.documentElement,
    { childList: true, subtree: true });
  document.addEventListener('click', (e) => {
    if (e.target.closest && e.target.closest('a[href^="#cite-"], #source-pick label')) {
      asked = Date.now();
      setTimeout(bringPanel, 3000);  // the source already open: its passage is not drawn again
    }
  }, true);

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
