"""Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).

Chromium is told to resolve no name (only loopback is ever asked for) and to skip its background
services (updates, safe browsing, sync, DNS over HTTPS...): left to itself it looks up Google's
update and account servers and probes 8.8.8.8, which the libc-level egress guard reports. It runs
under that guard like every other process, and every request of the page itself is also checked by
Playwright's routing in the tests, which blocks and fails anything beyond the server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps",
               "--disable-domain-reliability", "--no-pings", "--disable-client-side-phishing-detection",
               "--disable-breakpad", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
               "--disable-features=Translate,OptimizationHints,DnsOverHttps,AsyncDns,NetworkTimeServiceQuerying,"
               "MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater"]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh test does)")
    pytest.importorskip("playwright.sync_api")
    return path


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=chromium(), args=LAUNCH_ARGS, env=dict(os.environ))


# Every visible control of the page (buttons, tabs, labels, links, inputs' text and placeholders,
# table headers) and the text of the answer and the sources panel, each with the WCAG contrast of
# its text against what is painted behind it. Backgrounds are composited from the element up to the
# first opaque one (a gradient counts by its worst stop); an element's opacity and a colour's alpha
# fade the text into that background. Text needs 4.5:1 (3:1 when large: 24 px, or 18.66 px bold);
# an icon-only button's icon needs 3:1 (WCAG 1.4.11). Disabled controls are exempt, as in WCAG.
CONTRAST_JS = r"""() => {
  const rgba = (c) => { const v = (c.match(/[\d.]+/g) || []).map(Number); return v.length === 3 ? [...v, 1] : v; };
  const over = (top, bottom) => { const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]); };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const ratio = (x, y) => { const [a, b] = [lum(x), lum(y)].sort((p, q) => q - p); return (a + 0.05) / (b + 0.05); };
  const backgrounds = (el) => {  // the colours that may sit behind el's text, each composited
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const style = getComputedStyle(node);
      const stops = style.backgroundImage.includes('gradient')
        ? (style.backgroundImage.match(/rgba?\([^)]*\)/g) || []).map(rgba) : [];
      const colour = rgba(style.backgroundColor);
      if (stops.length) { layers.push(stops.map((s) => over(s, colour[3] ? colour : [255, 255, 255, 1]))); }
      else if (colour[3] > 0) { layers.push([colour]); }
      if (layers.length && layers[layers.length - 1].every((c) => c[3] >= 0.999)) break;
    }
    let result = [[255, 255, 255, 1]];
    for (const layer of layers.reverse()) { result = layer.flatMap((c) => result.map((b) => over(c, b))); }
    return result;
  };
  const opacity = (el) => { let o = 1;
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) o *= Number(getComputedStyle(n).opacity);
    return o; };
  const visible = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && opacity(el) > 0.05 &&
      el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true }); };
  const disabled = (el) => el.closest('[disabled], [aria-disabled="true"], fieldset:disabled') !== null;
  const name = (el) => { const id = el.closest('[id]'); const role = el.getAttribute('role');
    return (id ? '#' + id.id + ' ' : '') + el.tagName.toLowerCase() + (role ? '[role=' + role + ']' : ''); };
  const found = [];
  const check = (el, colour, what, text, large) => {
    const o = opacity(el);
    let worst = Infinity;
    for (const bg of backgrounds(el)) {
      const c = rgba(colour);
      worst = Math.min(worst, ratio(over([c[0], c[1], c[2], c[3] * o], bg), bg));
    }
    const need = what === 'icon' ? 3 : (large ? 3 : 4.5);
    found.push({ where: name(el), what, text: (text || '').trim().slice(0, 40),
                 ratio: Math.round(worst * 100) / 100, need });
  };
  const isLarge = (style) => { const px = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    return px >= 24 || (bold && px >= 18.66); };
  const controls = 'button, [role=tab], [role=button], [role=menuitem], [role=option], a[href], label, summary, ' +
    'input, textarea, select, th, [data-testid=block-info], [data-testid=block-label], ' +
    '#chat .message-content, #source-view, #who-bar, #feedback-note, #library-summary';
  const seen = new Set();
  for (const el of document.querySelectorAll(controls)) {
    if (!visible(el) || disabled(el)) continue;
    if (el.matches('input, textarea, select')) {
      if (['checkbox', 'radio', 'hidden', 'file', 'range', 'color'].includes(el.type)) continue;
      const style = getComputedStyle(el);
      if (el.value) check(el, style.color, 'text', el.value, isLarge(style));
      else if (el.placeholder) {
        check(el, getComputedStyle(el, '::placeholder').color, 'placeholder', el.placeholder, isLarge(style));
      }
      continue;
    }
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let any = false;
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const parent = t.parentElement;
      if (!t.textContent.trim() || seen.has(parent) || !visible(parent)) continue;
      seen.add(parent);
      any = true;
      const style = getComputedStyle(parent);
      check(parent, style.color, 'text', t.textContent, isLarge(style));
    }
    if (!any && el.matches('button, [role=button], a[href]') && el.querySelector('svg') && !seen.has(el)) {
      seen.add(el);
      const svg = el.querySelector('svg');
      const shape = svg.querySelector('path, circle, rect, line, polyline, polygon, ellipse') || svg;
      const s = getComputedStyle(shape);
      const paint = [s.stroke, s.fill].find((p) => p && p.startsWith('rgb') && rgba(p)[3] > 0) || s.color;
      check(svg, paint, 'icon', el.getAttribute('aria-label') || el.title, false);
    }
  }
  return found;
}"""


def contrast_report(page: Any) -> list[dict[str, Any]]:
    """Each visible control's text (or icon) with its contrast ratio and the ratio WCAG AA needs."""
    return list(page.evaluate(CONTRAST_JS))


# The characters of the page's visible text that its fonts cannot draw: each non-ASCII character is
# drawn on a canvas in the font of the element it is in and compared with a code point no font has
# (U+0378, unassigned); a character drawn the same is the empty box a reader sees (Debian's
# Chromium, with its DejaVu fonts, has no "ⓘ", for one).
MISSING_GLYPHS_JS = r"""() => {
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const draw = (font, ch) => { ctx.clearRect(0, 0, 64, 64); ctx.font = font; ctx.fillStyle = '#000';
    ctx.textBaseline = 'middle'; ctx.fillText(ch, 8, 32); return ctx.getImageData(0, 0, 64, 64).data.join(','); };
  const fonts = new Map();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const el = t.parentElement;
    if (!el || !el.checkVisibility({ checkVisibilityCSS: true }) || el.closest('script, style')) continue;
    const style = getComputedStyle(el);
    const font = `${style.fontStyle} ${style.fontWeight} 32px ${style.fontFamily}`;
    for (const ch of t.textContent) {
      if (ch.charCodeAt(0) < 128 || /[\s\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]/.test(ch)) continue;
      if (!fonts.has(font)) fonts.set(font, new Map());
      fonts.get(font).set(ch, (el.closest('[id]') || el).id);
    }
  }
  const missing = [];
  for (const [font, chars] of fonts) {
    const none = draw(font, '\u0378');
    for (const [ch, where] of chars) {
      if (draw(font, ch) === none) missing.push({ ch, code: ch.codePointAt(0).toString(16), where, font });
    }
  }
  return missing;
}"""


def missing_glyphs(page: Any) -> list[dict[str, str]]:
    """Characters of the visible page that render as an empty box (no installed font has them)."""
    return list(page.evaluate(MISSING_GLYPHS_JS))
