"""The pieces every page is made of: the head (CSP, CSS), tables (sortable on click), the epoch slider, escaping."""

from __future__ import annotations

import html
import json
import math

# Nothing but the page's own folder (and inline CSS/JS, data: URIs): a page that tried to load anything from
# elsewhere would be blocked by the browser and show a console error, which the page tests fail on.
CSP = "default-src 'self' 'unsafe-inline' data:"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1360px;color:#1d1d1f;
  padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:14px;margin:14px 0 6px}.note{color:#555}
.warn{background:#fff4d6;border:1px solid #e6c35c;padding:6px 10px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e6e6ee}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
.pix{image-rendering:pixelated}.gallery{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;border:1px solid #e2e2e2;padding:8px;border-radius:4px}
figcaption{font-size:12px;color:#444;max-width:420px}figure.best{border-color:#2a7;box-shadow:0 0 0 2px #2a74}
pre{background:#f7f7f9;padding:8px;overflow:auto;font-size:12px}div.scroll{overflow-x:auto}
img.thumb{width:64px;height:64px}.curves img{max-width:100%;border:1px solid #eee}
"""

# Click a header to sort by it (numbers by value via data-v, text otherwise; again to reverse).
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc?'asc':'desc');var b=t.tBodies[0],rows=Array.from(b.rows);
    function key(r){var c=r.cells[i],v=c.getAttribute('data-v');
      return v===null?c.textContent:(v===''?null:parseFloat(v))}
    rows.sort(function(a,c){var x=key(a),y=key(c);if(x===null)return 1;if(y===null)return -1;
      var d=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?d:-d});
    rows.forEach(function(r){b.appendChild(r)})})})});
"""

# An <input type=range> stepping an <img> through a list of frames (data-frames: JSON [[label, src], ...]).
SLIDER_JS = """
document.querySelectorAll('.slider').forEach(function(s){
  var frames=JSON.parse(s.getAttribute('data-frames')),img=s.querySelector('img'),r=s.querySelector('input'),
      lab=s.querySelector('.label');
  function show(){var f=frames[r.value];img.src=f[1];lab.textContent=f[0]}
  r.addEventListener('input',show);show()});
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            f"<script>{SORT_JS}{SLIDER_JS}</script>\n</body></html>\n")


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v) -> str:
    return "–" if is_missing(v) else f"{v:.1%}"


def interval(iv, fmt=pct) -> str:
    if not iv or is_missing(iv[0]):
        return ""
    return f' <span class="note">[{fmt(iv[0])}, {fmt(iv[1])}]</span>'


def number(v) -> str:
    if is_missing(v):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else esc(v)


def cell(text: str, value=None) -> str:
    """A <td>; `value` (a number, or None for "no value") makes it sort numerically."""
    if value is None and text in ("", "–"):
        return f'<td data-v="">{text}</td>'
    if isinstance(value, bool) or not isinstance(value, (int, float)) or is_missing(value):
        return f"<td>{text}</td>"
    return f'<td data-v="{float(value)!r}">{text}</td>'


def table(head: list[str], rows: list[list[str]], sortable: bool = False, attrs: str = "") -> str:
    """`rows` are lists of ready <td> strings (see `cell`); `head` plain text."""
    cls = ' class="sortable"' if sortable else ""
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "\n".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table{cls}{attrs}><thead><tr>{ths}</tr></thead><tbody>\n{trs}\n'
            "</tbody></table></div>")


def slider(frames: list[tuple[str, str]], width: int, alt: str) -> str:
    """An image with a range input under it that steps through `frames` ((label, relative src) pairs)."""
    data = esc(json.dumps(frames))
    last = len(frames) - 1
    return (f'<div class="slider" data-frames="{data}"><img class="pix" id="epoch-frame" alt="{esc(alt)}" '
            f'src="{esc(frames[last][1])}" style="width:{width}px"><br>'
            f'<input type="range" id="epoch-slider" min="0" max="{last}" value="{last}" step="1" '
            f'style="width:{width}px"> <span class="label"></span></div>')
