"""report.html: one run's results page, written by `maskgan evaluate` beside report.md.

What is on it: the K universal designs (the very tensors evaluation scored, handed over in its Report: the
checkpoint is not read again), each worn by a few test faces, with its own scores, and each again at the size
it prints (print_page.panel_size) with the `maskgan print` line for it; a slider through the designs
of every kept checkpoint (`designs/epoch_<n>.png`, n = epochs completed; only checkpoints still in the run
folder, see train.num_to_keep, get a frame, and frames written earlier are kept); every results table with its
intervals (built once in maskgan.reporting.results_table, as report.md's are); the training curves from the
kept checkpoints' meta.json metrics (matplotlib PNGs in `curves/`); the run's config and provenance.
Everything it shows lives in the run folder, linked relatively.
"""

from __future__ import annotations

import datetime
import io
import json

import torch

from data_loader import shards, storage
from maskgan.design import page as print_page
from maskgan.design import wearing
from maskgan.models.ops import to_float_images
from maskgan.evaluation.result import Report
from maskgan.reporting import results_table
from maskgan.reporting.pages import plots, recognizer_table
from maskgan.reporting.pages.html import cell, esc, page, pct, slider, table
from maskgan.reporting.textfmt import SPLITS
from maskgan.run import checkpoints
from maskgan.run.provenance import code_version

PAGE = "report.html"
FRAME_DESIGNS = 4  # designs per epoch frame: the first universal designs, small
FACES = 4  # faces each gallery design is shown on
SPLIT_ORDER = ("val", "test", "train")  # which split picks the "best" design: the selection set first
TIMING = ("train/images", "train/images_per_s", "train/data_wait_s", "train/epoch_s", "train/resident")


def frame_name(epochs_completed: int) -> str:
    return f"designs/epoch_{epochs_completed}.png"


def write_report_page(run: storage.Location, result: Report, log=print) -> storage.Location:
    """Write report.html and its images into the run folder from the Report evaluation returned (its designs,
    projector and data: the scored checkpoint is not read again); returns the page's Location."""
    report, saved = result.json, checkpoints.list_checkpoints(run)
    best = best_design(report)
    body = [_header(report, run),
            _gallery(run, result, best),
            _printed(run, result.designs),
            _epochs(run, saved, result, log),
            _tables(report),
            recognizer_table.section(report),
            _curves(run, saved),
            _config(run, result.loaded.cfg, saved, report)]
    loc = run.join(PAGE)
    storage.write_text(loc, page(f"maskgan report: {report['experiment']} / {report['generator']}", "\n".join(body)))
    return loc


def best_design(report: dict) -> int | None:
    """Index of the universal design with the lowest rank-1 on the first split that has it (val, test, train)."""
    rows = report.get("rows", {}).get(wearing.UNIVERSAL, {})
    for split in SPLIT_ORDER:
        per = rows.get(split, {}).get("per_design")
        if per:
            return min(range(len(per)), key=lambda i: (per[i]["rank1"], i))
    return None


def _header(report: dict, run: storage.Location) -> str:
    out = [f"<h1>{esc(report['experiment'])} / {esc(report['generator'])}: epoch {report['epoch'] + 1}</h1>",
           f'<p class="note">run <code>{esc(run.uri)}</code> · data <code>{esc(report["data"])}</code> · '
           f'gallery {report["gallery_size"]} identities (chance {report["chance"]:.2%}) · '
           '<a href="report.json">report.json</a> · <a href="report.md">report.md</a> · '
           '<a href="designs.png">designs.png</a></p>']
    if report.get("illustrative_only"):
        out.append('<p class="warn"><b>Illustrative only:</b> the recogniser has no real pretrained weights '
                   f"({esc(report['recognizer_weights'])}); these numbers say nothing about real face recognition.</p>")
    return "\n".join(out)


# ---- designs ----------------------------------------------------------------------------------------------


def _png(image: torch.Tensor) -> bytes:
    """[3,H,W] in [0,1] -> PNG bytes."""
    from PIL import Image

    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _strip(images: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """[N,3,H,W] side by side with a white gap -> [3,H,N*W+(N-1)*gap]."""
    n, c, h, _ = images.shape
    spacer = torch.ones(c, h, gap, dtype=images.dtype)
    parts = []
    for i, im in enumerate(images.cpu()):
        parts += ([spacer] if i else []) + [im]
    return torch.cat(parts, 2)


@torch.no_grad()
def _faces(result: Report, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first `n` masked test faces (train when the data has no test set) and their mask space, drawn with the
    projector evaluation scored with."""
    loaded = result.loaded
    sets = loaded.manifest["sets"]
    set_name = "test" if "test" in sets else "train"
    try:
        batch = next(shards.iter_set(loaded.root, set_name, columns=["label", "size", "masked"]))
    except StopIteration:  # no probes in that set: the designs alone
        return None
    device = loaded.scorer.device
    masked = to_float_images(torch.from_numpy(batch["masked"][:n])).to(device)
    return masked, wearing.mask_space(loaded.scorer.projector, masked)


def _gallery(run: storage.Location, result: Report, best: int | None) -> str:
    report, designs = result.json, result.designs
    faces = _faces(result, FACES)
    per = {s: report["rows"].get(wearing.UNIVERSAL, {}).get(s, {}).get("per_design") for s in SPLIT_ORDER}
    h, w = designs.shape[-2:]
    figs = []
    for i, d in enumerate(designs):
        storage.write_bytes(run.join(f"designs/universal_{i}.png"), wearing.design_png(d))
        imgs = [f'<img class="pix design" src="designs/universal_{i}.png" alt="universal design {i}" '
                f'style="width:{max(96, w)}px">']
        if faces is not None:
            masked, space = faces
            worn = wearing.worn(masked, space, d.unsqueeze(0).to(masked.device))
            storage.write_bytes(run.join(f"designs/universal_{i}_faces.png"), _png(_strip(worn)))
            imgs.append(f'<img class="pix faces" src="designs/universal_{i}_faces.png" alt="design {i} worn" '
                        f'style="height:{max(96, h)}px">')
        scores = " · ".join(f"{s} rank-1 {pct(per[s][i]['rank1'])}" for s in SPLIT_ORDER if per[s])
        cls = ' class="best"' if i == best else ""
        tag = " (best: lowest rank-1)" if i == best else ""
        figs.append(f"<figure{cls}>{' '.join(imgs)}<figcaption>design {i}{tag}: {scores}</figcaption></figure>")
    if best is not None:
        storage.write_bytes(run.join("designs/best.png"), wearing.design_png(designs[best]))
    return (f"<h2>Universal designs ({len(designs)}, in mask space, {w}×{h} px)</h2>"
            '<p class="note">Each fixed design is worn by every probe (what a wearer would print); shown here on '
            f"{FACES} test faces. Lower rank-1 = better protection.</p>"
            f'<div class="gallery">{"".join(figs)}</div>')


def _printed(run: storage.Location, designs: torch.Tensor) -> str:
    """Each universal design at the size it prints (CSS millimetres), with the command that prints it."""
    w_mm, h_mm = print_page.panel_size(tuple(designs.shape[-2:]))
    figs = [f'<figure><img class="printed" src="designs/universal_{i}.png" alt="design {i} at printed size" '
            f'style="width:{w_mm:g}mm;height:{h_mm:g}mm"><figcaption>design {i}: {w_mm:g} × {h_mm:g} mm · '
            f'<code>maskgan print --from {esc(run.uri)} --design {i} --width-mm {w_mm:g} --height-mm {h_mm:g} '
            f'--out design_{i}.pdf</code></figcaption></figure>' for i in range(len(designs))]
    return (f"<h2>At printed size ({w_mm:g} × {h_mm:g} mm)</h2>"
            f'<p class="note">Each design as a mask panel {h_mm:g} mm high at its own W:H, smoothed as the print '
            "upscales it (bicubic). The browser draws CSS millimetres at 96 px per inch, so the size on screen is "
            "true only on a display at that scale; the PDF from the command below is exact.</p>"
            f'<div class="gallery">{"".join(figs)}</div>')


@torch.no_grad()
def _epochs(run: storage.Location, saved, result: Report, log) -> str:
    """One small frame per kept checkpoint (written once; the evaluated one's from the designs it was scored
    on), plus frames already in designs/; a slider over them."""
    report = result.json
    written = {}
    for epoch, loc in saved:
        name = frame_name(epoch + 1)
        if loc.uri == report["checkpoint"]:
            storage.write_bytes(run.join(name), _png(_strip(result.designs[:FRAME_DESIGNS])))
        elif not storage.exists(run.join(name)):  # an earlier kept checkpoint: its own designs
            try:
                state = checkpoints.read_checkpoint(loc)
            except checkpoints.CheckpointError as e:
                log(f"warning: no design frame for {loc.uri}: {e}")
                continue
            gen = checkpoints.generator_from_checkpoint(state, loc.uri).eval()
            d = wearing.universal_designs(gen, state["arch"]["latent_dim"], report["universal_k"],
                                           seed=report["universal_seed"])[:FRAME_DESIGNS]
            storage.write_bytes(run.join(name), _png(_strip(d)))
        written[epoch + 1] = name
    folder = run.join("designs")
    for f in storage.list_dir(folder) if storage.exists(folder) else []:
        if f.startswith("epoch_") and f.endswith(".png") and f[6:-4].isdigit():
            written.setdefault(int(f[6:-4]), f"designs/{f}")
    if not written:
        return ""
    frames = [(f"after epoch {n}", written[n]) for n in sorted(written)]
    return ("<h2>Designs over training</h2>"
            f'<p class="note">The first {FRAME_DESIGNS} universal designs as each checkpoint drew them. Only kept '
            "checkpoints have a frame (train.num_to_keep), plus frames written by earlier evaluations.</p>"
            + slider(frames, 480, "designs at this epoch"))


# ---- tables -----------------------------------------------------------------------------------------------


def _html_table(t: results_table.Table) -> str:
    def td(c: results_table.Cell) -> str:  # the small print without Markdown's code marks
        small = f' <span class="note">{esc(c.small.replace("`", ""))}</span>' if c.small else ""
        return cell(esc(c.text) + small, c.value)
    return table(t.head, [[td(c) for c in row] for row in t.rows])


def _tables(report: dict) -> str:
    out = ["<h2>Identification accuracy</h2>",
           f'<p class="note">Rank-1 over the full gallery of {report["gallery_size"]} identities; 95 % '
           "probe-bootstrap intervals in brackets.</p>", _html_table(results_table.accuracy_table(report))]
    for split in SPLITS:
        if split in report.get("impostors", {}) and report["impostors"][split]["thresholds"]:
            out.append(_split_table(report, split))
    return "\n".join(out)


def _split_table(report: dict, split: str) -> str:
    imp = report["impostors"][split]
    thr = ", ".join(f"FAR {k}: {t:.3f}" for k, t in imp["thresholds"].items())
    return (f"<h3>{esc(split)}: verification, identification, hubness</h3>"
            f'<p class="note">Thresholds from {imp["pairs"]} impostor pairs of unmasked photos ({esc(thr)}). '
            "Dodging = share of probes below the threshold (Wilson 95 %); rank-1 with its identity-bootstrap "
            "95 %; Δ = row minus original_mask on the same probes (a `_physical` row: minus the plain mask under the "
            "same draws); Δ best control = row minus the plain control that dodges most.</p>"
            + _html_table(results_table.split_table(report, split)))


# ---- curves, config -----------------------------------------------------------------------------------------


def metric_series(saved) -> dict[str, list[tuple[int, float]]]:
    """metric name -> [(epochs completed, value)] over the kept checkpoints' meta.json."""
    series: dict[str, list] = {}
    for epoch, loc in saved:
        for k, v in (checkpoints.read_meta(loc).get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                series.setdefault(k, []).append((epoch + 1, float(v)))
    return series


def curve_groups(series: dict) -> list[tuple[str, str, dict]]:
    """(file stem, title, series) per chart: training losses, validation accuracy."""
    losses = {k: v for k, v in series.items() if k.startswith("train/") and k not in TIMING}
    val = {k: v for k, v in series.items() if k.startswith("acc/val/")}
    return [(stem, title, s) for stem, title, s in (("losses", "training losses", losses),
                                                    ("val", "validation accuracy", val)) if s]


def _curves(run: storage.Location, saved) -> str:
    imgs = []
    for stem, title, s in curve_groups(metric_series(saved)):
        storage.write_bytes(run.join(f"curves/{stem}.png"), plots.curves_png(s, title))
        imgs.append(f'<img src="curves/{stem}.png" alt="{esc(title)}">')
    if not imgs:
        return ""
    return ("<h2>Training curves</h2>"
            f'<p class="note">From the meta.json of the {len(saved)} kept checkpoints (train.num_to_keep).</p>'
            f'<div class="curves">{" ".join(imgs)}</div>')


def _config(run: storage.Location, cfg, saved, report: dict) -> str:
    import yaml

    meta = {}
    for _, loc in saved:
        if loc.uri == report["checkpoint"]:
            meta = checkpoints.read_meta(loc)
    prov = [("checkpoint", report["checkpoint"]), ("checkpoint sha256", meta.get("sha256")),
            ("epochs completed", report["epoch"] + 1), ("recogniser weights", report["recognizer_weights"]),
            ("recogniser", json.dumps(report.get("recognizer"), sort_keys=True)), ("data", report["data"]),
            ("universal designs", f"{report['universal_k']} from seed {report['universal_seed']}"),
            ("page written by", code_version()),
            ("page written at", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]
    rows = [[f"<td>{esc(k)}</td>", f'<td style="text-align:left"><code>{esc(v)}</code></td>'] for k, v in prov]
    link = ' (<a href="config.yaml">config.yaml</a>)' if storage.exists(run.join("config.yaml")) else ""
    return ("<h2>Provenance</h2>" + table(["what", "value"], rows) +
            f"<h2>Config{link}</h2><pre>{esc(yaml.safe_dump(cfg.to_dict(), sort_keys=False))}</pre>")
