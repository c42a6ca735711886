"""check.html: what `maskgan check` found, as a static page beside check.json (renders check.json's dict; never
reads a photo or a model). Per recogniser: the thresholds and where they came from, then per group (wearing,
plain, each try-on) every photo, the aligned chip that recogniser saw, a bar of its score against the verdict
threshold, the rank among the crowd and the verdict. Images are files in check_files/ beside the page.
"""

from __future__ import annotations

from maskgan.reporting.pages.html import esc, page, table

BAR_CSS = """
.bar{position:relative;width:220px;height:14px;background:#eef;border:1px solid #ccd;display:inline-block;
  vertical-align:middle}.bar .fill{position:absolute;left:0;top:0;bottom:0;background:#7a9cc6}
.bar .thr{position:absolute;top:-3px;bottom:-3px;width:2px;background:#c33}
.yes{color:#a11;font-weight:600}.no{color:#171;font-weight:600}img.face{width:96px;height:96px}
img.chip{width:72px;height:72px}.summary li{font-size:15px}td.src{white-space:normal;text-align:left;min-width:420px}
"""


def _scale(metric: str, scores: list[float], thr: float | None) -> tuple[float, float]:
    if metric.startswith("cosine"):
        return 0.0, 1.0
    return 0.0, max([1.0, *scores, *([thr] if thr is not None else [])]) * 1.05


def _bar(score: float, thr: float | None, lo: float, hi: float) -> str:
    def at(v):
        return max(0.0, min(100.0, 100 * (v - lo) / (hi - lo)))

    marker = "" if thr is None else f'<span class="thr" style="left:{at(thr):.1f}%"></span>'
    return f'<span class="bar"><span class="fill" style="width:{at(score):.1f}%"></span>{marker}</span>'


def _group(rec: dict, group: dict, photos: list[dict], chip_dir: str) -> str:
    thr = next((t for t in rec["thresholds"] if t["label"] == rec["verdict_by"]), None)
    lo, hi = _scale(rec["metric"], [p["score"] for p in group["photos"]], thr["value"] if thr else None)
    files = {p["photo"]: p for p in photos}
    rows = []
    for p in group["photos"]:
        f = files[p["photo"]]
        said = p["recognised"].get(rec["verdict_by"]) if thr else None
        verdict = ("–" if said is None else
                   '<span class="yes">recognised</span>' if said else '<span class="no">not recognised</span>')
        rows.append([f"<td>{esc(p['photo'])}<br><span class='note'>{esc(p['how'])}</span></td>",
                     f'<td><img class="face" src="{esc(f["file"])}" alt="{esc(p["photo"])}"></td>',
                     f'<td><img class="chip" src="{esc(chip_dir)}/{esc(f["chip"])}" alt="aligned crop"></td>',
                     f"<td>{_bar(p['score'], thr['value'] if thr else None, lo, hi)} {p['score']:.3f}</td>",
                     f"<td>{'–' if p['rank'] is None else p['rank']}</td>", f"<td>{verdict}</td>"])
    head = ["photo", "photo as scored", f"what {rec['name']} saw", f"{rec['metric']} (red: threshold)",
            "rank", "verdict"]
    said = ("no verdict" if group["verdict"] is None else
            f"{group['verdict']} (in {group['recognised_photos']} of {len(group['photos'])} photos)")
    return (f"<h3>{esc(group['group'])}: {esc(said)}; mean {rec['metric']} {group['mean_score']:.3f}</h3>"
            + table(head, rows))


def _recogniser(rec: dict, photos: dict, chip_dir: str) -> str:
    ths = table(["threshold", "value", "where it comes from"],
                [[f"<td>{esc(t['label'])}{' (verdicts)' if t['label'] == rec['verdict_by'] else ''}</td>",
                  f"<td>{t['value']:.4f}</td>", f"<td class='src'>{esc(t['source'])}</td>"] for t in rec["thresholds"]])
    parts = [f"<h2>{esc(rec['name'])} <span class='note'>({esc(rec['role'])})</span></h2>",
             f"<p class='note'>{esc(rec['desc'])}; score: {esc(rec['metric'])} to the closest unmasked photo</p>",
             ths if rec["thresholds"] else ""]
    if rec["no_verdict"]:
        parts.append(f"<p class='warn'>{esc(rec['no_verdict'])}</p>")
    if rec["unmasked_disagree"]:
        parts.append(f"<p class='warn'>{esc(rec['name'])} takes unmasked photos {esc(rec['unmasked_disagree'])} "
                     "for two different people</p>")
    parts += [_group(rec, g, photos[g["group"]], chip_dir) for g in rec["groups"]]
    return "\n".join(parts)


def _design(d: dict | None) -> str:
    if not d:
        return ""
    attacked = ("not recorded (a design file alone does not say; pass --run to name the run that made it)"
                if d["attacked"] is None else ", ".join(d["attacked"]) or "none")
    return (f"<p>Design tried on: <b>{esc(d['label'])}</b> from {esc(d['where'])}. Recognisers attacked when it "
            f"was made: {esc(attacked)}. White-box: those same recognisers; held-out: all others.</p>")


def render(data: dict, chip_dirs: dict[str, str]) -> str:
    """The page for check.json's dict; chip_dirs: recogniser name -> its chips' folder (relative)."""
    notes = [data["crowd_note"], *data["missing"]]
    if data["no_face"]:
        notes.append(f"no face found in {len(data['no_face'])} photo(s), left out: {', '.join(data['no_face'])}")
    unmasked = "".join(f'<img class="face" src="{esc(p["file"])}" alt="{esc(p["photo"])}" title="{esc(p["photo"])}"> '
                       for p in data["photos"]["unmasked"])
    body = ["<h1>Will this mask protect me?</h1>",
            f"<p class='note'>{esc(data['folder'])}; crowd: {data['crowd_people']} people</p>",
            "<ul class='summary'>" + "".join(f"<li>{esc(s)}</li>" for s in data["summary"]) + "</ul>",
            _design(data["design"]),
            "".join(f"<p class='warn'>{esc(n)}</p>" for n in notes if n),
            f"<h2>The person, unmasked</h2><div>{unmasked}</div>",
            *[_recogniser(r, data["photos"], chip_dirs[r["name"]]) for r in data["recognisers"]],
            "<p class='note'>What a verdict means and what it does not (lighting, camera, other recognisers): "
            "docs/check.md in the maskgan repository.</p>"]
    return page("maskgan check", f"<style>{BAR_CSS}</style>\n" + "\n".join(body))
