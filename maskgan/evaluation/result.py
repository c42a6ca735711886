"""What evaluation returns: a `Report`. Reporting (maskgan.reporting.runner) renders it into report.json,
report.md, designs.png and report.html without reading the checkpoint again: the report carries the scorer it
was scored with and the universal designs it judged, beside report.json's dict."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskgan.evaluation.scorer import Loaded


@dataclass
class Report:
    """`json`: exactly what report.json holds (its keys are read by users, tests and the renderers); `loaded`:
    the checkpoint's config, data root, manifest, scorer and built parts; `designs`: the K universal designs
    [K,3,h,w] as scored (report.json's universal_distinct says which of them are distinct)."""

    json: dict
    loaded: Loaded
    designs: torch.Tensor
