"""Is a checkpoint (its metrics, its tensors) made of finite numbers? The one check for every reader that must
refuse a diverged run (export, sample) and the one way to write strict JSON from numbers that may not be finite.

NaN and inf are not JSON (json.dumps writes bare NaN by default, which most readers reject), and a diverged
run's 0 % accuracy looks like success; both are caught here.
"""

from __future__ import annotations

import math


def nonfinite_metric(metrics: dict) -> str | None:
    """'train/gen_ce = nan' for the first metric that is not a finite number; None when all are finite."""
    for name, value in sorted(metrics.items()):
        if isinstance(value, float) and not math.isfinite(value):
            return f"metric {name} = {value}"
    return None


def nonfinite_tensor(state: dict) -> str | None:
    """'tensor generator.net.0.weight holds nan' for the first weight (or number) in a checkpoint's state that is
    not finite: generator, head and optimiser state alike; None when all are finite."""
    import torch

    def walk(obj, path):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                bad = "nan" if bool(torch.isnan(obj).any()) else "inf"
                return f"tensor {path} holds {bad}"
        elif isinstance(obj, float) and not math.isfinite(obj):
            return f"value {path} = {obj}"
        elif isinstance(obj, dict):
            for k, v in obj.items():
                found = walk(v, f"{path}.{k}" if path else str(k))
                if found:
                    return found
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                found = walk(v, f"{path}.{i}")
                if found:
                    return found
        return None

    return walk({k: state.get(k) for k in ("generator", "head", "g_opt", "h_opt")}, "")


def strict_json(obj, path: str = "", nulls: dict | None = None):
    """A copy of obj where every non-finite float is None, each recorded in `nulls` as {path: why}, so that
    json.dumps(..., allow_nan=False) holds (bare NaN is not JSON; most readers reject it)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if nulls is not None:
            nulls[path] = f"{obj} in the source (no finite value: e.g. an interval over no probes)"
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v, f"{path}.{k}" if path else str(k), nulls) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, f"{path}.{i}", nulls) for i, v in enumerate(obj)]
    return obj
