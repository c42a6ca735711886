"""The one runner that evaluates a run and writes what a user reads: report.json, report.md, designs.png and
report.html, all rendered from the one Report evaluation returned (nothing here re-scores it or reads the
checkpoint again: the page and designs.png are drawn with the models and designs evaluation scored with)."""

from __future__ import annotations

import json

from data_loader import shards, storage
from maskgan.design.wearing import designs_png
from maskgan.evaluation.evaluate import evaluate_checkpoint
from maskgan.evaluation.result import Report
from maskgan.reporting.pages.run_page import write_report_page
from maskgan.reporting.report import report_markdown
from maskgan.run import checkpoints


def faces_png(result: Report) -> bytes:
    """designs.png: test faces wearing the generator's designs, drawn with the scorer evaluation used."""
    s = result.loaded.scorer
    return designs_png(result.loaded.root, s.generator, s.latent_dim, s.projector, s.device, trunk=s.trunk,
                       seed=result.loaded.cfg.train.seed)


def evaluate_run(run_uri: str, log=print, splits=shards.SPLITS, universal_k: int | None = None,
                 defender_steps: int | None = None, recognizers=()) -> dict:
    """Full evaluation of a run's latest good checkpoint; writes report.json, report.md, designs.png, report.html
    and returns report.json's dict. `recognizers`: more held-out specs (zoo:<name>) scored beside the config's
    eval.held_out, no retraining."""
    run = storage.resolve(run_uri)
    state, ckpt_loc = checkpoints.latest_checkpoint(run, log=log)
    result = evaluate_checkpoint(state, ckpt_loc, log=log, splits=splits, universal_k=universal_k,
                                 defender_steps=defender_steps, cache_dir=run.join("dlib_cache").uri,
                                 recognizers=recognizers)
    report = result.json
    failed = checkpoints.run_failure(run)
    if failed:  # scored for diagnosis, but never presented as a finished run
        report["run_failed"] = failed.get("reason", "?")
        log(f"warning: {run.uri} failed ({report['run_failed']}): this report is of its last good checkpoint")
    storage.write_text(run.join("report.json"), json.dumps(report, indent=1, sort_keys=True))
    storage.write_text(run.join("report.md"), report_markdown(report))
    storage.write_bytes(run.join("designs.png"), faces_png(result))
    write_report_page(run, result, log=log)
    return report
