"""Training metrics exported through Ray's metrics agent (Prometheus, names prefixed ``ray_``).

The trainer hands over one flat, namespaced dict per report (``train/gen_ce``, ``acc/val/generated``, ...);
``TrainMetrics`` maps the keys it knows onto a handful of Gauges tagged with the run name. The Gauges are created on
first use, not at import, because creating one needs Ray's native layer (and, to be exported, a running node), while
configs, tests and the CLI import this module without Ray.
"""

from __future__ import annotations

# Flat metric key -> Gauge name. Accuracy keys (acc/<split>/<row>) go to maskgan_accuracy.
_SCALARS = {
    "train/images_per_s": "maskgan_images_per_second",
    "train/data_wait_s": "maskgan_data_wait_seconds",
    # The step reports the generator's objective as train/gen_ce: the recogniser's cross-entropy on generated
    # masks, which the generator maximises.
    "train/gen_ce": "maskgan_generator_loss",
    "train/head_loss": "maskgan_recognizer_loss",
    "checkpoint/upload_s": "maskgan_checkpoint_upload_seconds",
}
_ACCURACY = "maskgan_accuracy"
_DESCRIPTIONS = {
    "maskgan_images_per_second": "Training throughput, images per second",
    "maskgan_data_wait_seconds": "Seconds spent waiting for batches since the last report",
    "maskgan_generator_loss": "Recogniser cross-entropy on generated masks, which the generator maximises",
    "maskgan_recognizer_loss": "Recogniser head loss",
    "maskgan_checkpoint_upload_seconds": "Seconds spent writing the last checkpoint to storage",
    _ACCURACY: "Identification accuracy by evaluation row and split",
}

# What Prometheus shows (Ray's exporter prefixes every application metric with "ray_").
METRIC_NAMES = tuple(f"ray_{name}" for name in dict.fromkeys((*_SCALARS.values(), _ACCURACY)))

_gauges: dict = {}


def _gauge(name: str):
    # Created once per process and shared by every TrainMetrics: Ray tells series apart by their tags.
    if name not in _gauges:
        from ray.util.metrics import Gauge

        tags = ("run", "split", "row") if name == _ACCURACY else ("run",)
        _gauges[name] = Gauge(name, description=_DESCRIPTIONS[name], tag_keys=tags)
    return _gauges[name]


class TrainMetrics:
    """``log(metrics, step)`` / ``close()`` over Ray Gauges for one run."""

    def __init__(self, run_name: str):
        self.run_name = run_name

    def log(self, metrics: dict[str, float], step: int) -> None:
        # Gauges hold the latest value only; Prometheus' scrape time stands in for the step, so it is not exported.
        del step
        for key, value in metrics.items():
            if key in _SCALARS:
                _gauge(_SCALARS[key]).set(float(value), tags={"run": self.run_name})
                continue
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "acc":
                tags = {"run": self.run_name, "split": parts[1], "row": parts[2]}
                _gauge(_ACCURACY).set(float(value), tags=tags)

    def close(self) -> None:
        """Wait one metrics export interval: Ray's agent exports gauges on its own schedule and forgets them
        when the worker exits, so a run's last epoch would otherwise often never reach Prometheus.
        MASKGAN_METRICS_FLUSH_S overrides the wait (the test suite sets 0)."""
        import os
        import time

        default = float(os.environ.get("RAY_metrics_report_interval_ms", "10000")) / 1000
        time.sleep(max(0.0, float(os.environ.get("MASKGAN_METRICS_FLUSH_S", default))))
