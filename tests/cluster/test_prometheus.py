"""What a real Prometheus scraped from the Ray head while `maskgan submit` trained: the project's gauges, tagged
with the run name, and data behind every PromQL expression of the Grafana dashboard (cluster/dashboard.json)."""

from __future__ import annotations

import time

from cluster.grafana import dashboard_exprs
from maskgan.metrics import METRIC_NAMES

# Scrapes land up to a scrape interval (1 s) after the run ends; Prometheus answers a moment later still.
SETTLE_S = 30


def _poll(fn, timeout_s=SETTLE_S):
    deadline = time.monotonic() + timeout_s
    while True:
        result = fn()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1.0)


def test_project_metrics_reach_prometheus_tagged_with_the_run(submitted_run, prometheus):
    assert submitted_run.returncode == 0, submitted_run.output[-3000:]
    run = submitted_run.name
    window = f"[{int(time.time() - submitted_run.started) + 60}s]"  # the whole run, however long it took
    latest = {}
    for name in METRIC_NAMES:
        # An instant query over the run's window: the gauges vanish from Ray's exporter once the workers exit.
        series = _poll(lambda name=name: prometheus.query(f'last_over_time({name}{{run="{run}"}}{window})'))
        assert series, f"Prometheus has no {name} for run {run}"
        latest[name] = {(s["metric"].get("split"), s["metric"].get("row")): float(s["value"][1]) for s in series}

    assert latest["ray_maskgan_images_per_second"][None, None] > 0
    assert latest["ray_maskgan_data_wait_seconds"][None, None] >= 0
    assert latest["ray_maskgan_checkpoint_upload_seconds"][None, None] >= 0
    for loss in ("ray_maskgan_generator_loss", "ray_maskgan_recognizer_loss"):
        assert latest[loss][None, None] == latest[loss][None, None]  # a number, not NaN
    accuracy = latest["ray_maskgan_accuracy"]
    assert set(accuracy) == {("val", "unmasked"), ("val", "original_mask"), ("val", "generated")}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())


def test_every_dashboard_expression_has_data_for_the_run(submitted_run, prometheus):
    assert submitted_run.returncode == 0, submitted_run.output[-3000:]
    exprs = dashboard_exprs()
    assert len(exprs) >= 9
    start, empty = submitted_run.started, []
    for expr in exprs:
        series = _poll(lambda expr=expr: prometheus.query_range(expr, start, time.time()))
        if not any(s["values"] for s in series):
            empty.append(expr)
            continue
        if "maskgan" in expr:  # the project's panels show this run by name
            assert submitted_run.name in {s["metric"].get("run") for s in series}, (expr, series)
    assert not empty, f"dashboard expressions with no data for the run: {empty}"
