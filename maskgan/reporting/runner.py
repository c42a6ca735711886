"""The one runner that evaluates a run and writes what a user reads: report.json, report.md, designs.png and
report.html, all rendered from the one report evaluation returned (nothing here re-scores or re-reads it)."""

from __future__ import annotations

import json

from data_loader import shards, storage
from maskgan.design.wearing import UNIVERSAL_K
from maskgan.evaluation.evaluate import evaluate_checkpoint
from maskgan.reporting.pages.run_page import write_report_page
from maskgan.reporting.report import report_markdown
from maskgan.run import checkpoints


def evaluate_run(run_uri: str, log=print, splits=shards.SPLITS, universal_k: int = UNIVERSAL_K,
                 defender_steps: int | None = None, recognizers=()) -> dict:
    """Full evaluation of a run's latest good checkpoint; writes report.json, report.md, designs.png, report.html.
    `recognizers`: more held-out specs (zoo:<name>) scored beside the config's eval.held_out, no retraining."""
    run = storage.resolve(run_uri)
    state, ckpt_loc = checkpoints.latest_checkpoint(run, log=log)
    report = evaluate_checkpoint(state, ckpt_loc, log=log, splits=splits, universal_k=universal_k,
                                 defender_steps=defender_steps, cache_dir=run.join("dlib_cache").uri,
                                 recognizers=recognizers)
    failed = checkpoints.run_failure(run)
    if failed:  # scored for diagnosis, but never presented as a finished run
        report["run_failed"] = failed.get("reason", "?")
        log(f"warning: {run.uri} failed ({report['run_failed']}): this report is of its last good checkpoint")
    faces_png = report.pop("_designs_png")
    storage.write_text(run.join("report.json"), json.dumps(report, indent=1, sort_keys=True))
    storage.write_text(run.join("report.md"), report_markdown(report))
    storage.write_bytes(run.join("designs.png"), faces_png)
    write_report_page(run, report, log=log)
    return report
