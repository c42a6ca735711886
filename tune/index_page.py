"""A sweep's index.html, written beside results.md: the trials table (sortable by any column), each trial's best
design thumbnail and a link to its report.html, and the trials' training curves overlaid (matplotlib PNGs).

Built from the same pieces as a run's report.html (maskgan.reporting.pages): static files, relative links into the sweep's
own `runs/` folder, images next to the page; works from a local folder or an S3 prefix, no network at view time.
"""

from __future__ import annotations

from data_loader import storage
from maskgan.reporting.pages import plots
from maskgan.reporting.pages.html import cell, esc, interval, number, page, pct, table
from maskgan.reporting.pages.run_page import PAGE as RUN_PAGE
from maskgan.reporting.pages.run_page import metric_series
from maskgan.run import checkpoints
from tune.results import _axis_columns  # the same columns as results.md
from tune.space import Space

PAGE = "index.html"
ACCURACY_COLUMNS = (("generated", "val"), ("generated", "test"), ("original_mask", "test"), ("unmasked", "test"))
OVERLAID = (("acc/val/generated", "val generated accuracy (lower = better design)"),
            ("acc/val/unmasked", "val unmasked accuracy (the guard watches it)"),
            ("train/gen_ce", "generator's cross-entropy (it maximises it)"))


def relative(loc: storage.Location, inner: storage.Location) -> str:
    """`inner`'s path relative to the folder `loc` (inner must lie under it, as runs/ does)."""
    base = loc.uri.rstrip("/") + "/"
    if not inner.uri.startswith(base):
        raise ValueError(f"{inner.uri} is not inside {loc.uri}: the page could not link to it relatively")
    return inner.uri[len(base):]


def write_index_page(loc: storage.Location, rows: list[dict], space: Space, runs: storage.Location) -> storage.Location:
    """Write index.html and its curve images into the sweep folder `loc`; returns the page's Location."""
    axes = _axis_columns(rows, space)
    runs_rel = relative(loc, runs)
    head = ["trial", "design", "status", *axes, "epochs", "objective", "guard", "PBT lineage",
            *[f"{r} {s}" for r, s in ACCURACY_COLUMNS], "diversity"]
    body_rows, series = [], {}
    for row in sorted(rows, key=lambda r: r["trial"]):
        tid = row["trial"]
        run = runs.join(tid)
        link = f"{runs_rel}/{tid}/{RUN_PAGE}"
        name = (f'<a href="{esc(link)}">{esc(tid)}</a>' if storage.exists(run.join(RUN_PAGE)) else esc(tid))
        thumb = ""
        if storage.exists(run.join("designs/best.png")):
            thumb = (f'<img class="pix thumb" src="{esc(runs_rel)}/{esc(tid)}/designs/best.png" '
                     f'alt="best design of {esc(tid)}">')
        guard = row.get("guard_ok")
        cells = [f"<td>{name}</td>", f"<td>{thumb}</td>", cell(esc(row["status"])),
                 *[cell(number(row.get(k)), row.get(k)) for k in axes],
                 cell(number(row.get("epochs")), row.get("epochs")),
                 cell(number(row.get("objective")), row.get("objective")),
                 cell("–" if guard is None else ("ok" if guard else "collapsed"),
                      None if guard is None else float(bool(guard))),
                 cell(esc(row.get("pbt_from") or "–"))]
        cells += [cell(pct(row.get(f"{r}/{s}")) + interval(row.get(f"{r}/{s}/ci95")), row.get(f"{r}/{s}"))
                  for r, s in ACCURACY_COLUMNS]
        cells.append(cell(number(row.get("diversity")), row.get("diversity")))  # universal designs' pixels, val
        body_rows.append(cells)
        if storage.exists(run):
            series[tid] = metric_series(checkpoints.list_checkpoints(run))
    curves = []
    for i, (metric, title) in enumerate(OVERLAID):
        per_trial = {tid: s[metric] for tid, s in series.items() if metric in s}
        if per_trial:
            storage.write_bytes(loc.join(f"curves/{i}.png"), plots.curves_png(per_trial, f"{metric}: {title}"))
            curves.append(f'<img src="curves/{i}.png" alt="{esc(metric)} per trial">')
    warn = ('<p class="warn"><b>Illustrative only:</b> the recogniser has no real pretrained weights.</p>'
            if any(r.get("illustrative_only") for r in rows) else "")
    body = (f"<h1>sweep {esc(space.name)}: {len(rows)} trials</h1>"
            f'<p class="note"><a href="results.md">results.md</a> · <a href="results.csv">results.csv</a> · '
            '<a href="sweep.json">sweep.json</a>. <b>objective</b> = val generated accuracy while the recogniser '
            "still recognises people (guard ok), else 1.0; lower is better. Click a column to sort by it. "
            "Accuracy columns: each trial's last checkpoint, 95 % intervals in brackets.</p>" + warn
            + table(head, body_rows, sortable=True, attrs=' id="trials"')
            + ("<h2>Curves, every trial overlaid</h2>"
               '<p class="note">From each trial\'s kept checkpoints (train.num_to_keep).</p>'
               f'<div class="curves">{" ".join(curves)}</div>' if curves else ""))
    out = loc.join(PAGE)
    storage.write_text(out, page(f"sweep {space.name}", body))
    return out
