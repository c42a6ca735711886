"""Weight and checkpoint loading: `load_torch` is the one torch.load of the project (the checkpoint reader
in maskgan.run.checkpoints goes through it too), always with weights_only=True.

Sources for the recogniser: `vggface2` / `casia-webface` (facenet-pytorch's release files, downloaded once
into the torch cache; needs internet), `random` (seeded initialisation; numbers are illustrative only),
or a local path / s3:// URI of a state dict (e.g. from `maskgan recognizer adapt`).
"""

from __future__ import annotations

import io
import os
import warnings

import torch

from data_loader import storage
from maskgan.config import PRETRAINED, RANDOM_WEIGHTS
from maskgan.models.recognizer import _inception_resnet_v1


class WeightsError(RuntimeError):
    user_error = True

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message  # why, without the file: for callers that name the file their own way


def load_torch(uri: str, what: str = "weights file", endpoint: str | None = None, *,
               data: bytes | None = None) -> dict:
    """torch.load(weights_only=True) of a local path or s3:// URI; one-line errors naming the file.

    `data`: the file's bytes when the caller already read them (the checkpoint reader verifies them against
    meta.json first, and loads exactly the bytes it verified); `uri` then only names the file in errors."""
    if data is None:
        try:
            data = storage.read_bytes(storage.resolve(uri, endpoint))
        except storage.StorageError as e:
            raise WeightsError(f"unreadable {what}: {e}") from None
    try:
        with warnings.catch_warnings():  # a file of another pickle protocol is refused or loaded, not warned of
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, refused globals: all mean "not a safe weights file"
        reason = why_not_loaded(e, data)
        raise WeightsError(f"unreadable {what} {uri}: {reason}", reason) from None
    if not isinstance(obj, dict):
        reason = f"expected a dict, got {type(obj).__name__}"
        raise WeightsError(f"unreadable {what} {uri}: {reason}", reason)
    return obj


def why_not_loaded(e: Exception, data: bytes) -> str:
    """Why torch.load(weights_only=True) refused `data`, in words that never suggest turning the check off.

    torch's own message starts with advice to re-run with weights_only=False ("will likely succeed, but it can
    result in arbitrary code execution"); cut to a line, that reads as a recommendation. We say what the file is."""
    import re

    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"the file holds Python code or objects{what}, not only tensors; it was not loaded "
                "(weights are only ever loaded as plain tensors)")
    if not data:
        return "the file is empty"
    if isinstance(e, EOFError) or "EOF" in text:
        return "the file is truncated"
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return f"not a torch weights file ({type(e).__name__}{': ' + first if first else ''})"


def save_torch(obj: dict, uri: str, endpoint: str | None = None) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(storage.resolve(uri, endpoint), buf.getvalue())


def recognizer_state(spec: str, endpoint: str | None = None) -> tuple[dict | None, dict]:
    """(state dict or None for random, description). The description says what the numbers mean."""
    if spec in RANDOM_WEIGHTS:
        return None, {"weights": spec, "pretrained": False}
    if spec in PRETRAINED:
        _inception_resnet_v1()  # registers facenet_pytorch without its torchvision-needing __init__
        from facenet_pytorch.models.utils.download import download_url_to_file

        url = PRETRAINED[spec]
        home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")))
        cached = os.path.join(home, "checkpoints", os.path.basename(url))
        if not os.path.exists(cached):
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            try:
                download_url_to_file(url, cached)
            except Exception as e:
                raise WeightsError(f"cannot download {spec} weights from {url} ({e}); "
                                   f"download the file elsewhere and pass its path or s3:// URI") from None
        return load_torch(cached, f"{spec} weights"), {"weights": spec, "pretrained": True}
    obj = load_torch(spec, "recogniser weights file", endpoint)
    if "state_dict" in obj:  # our own file (adapt): carries what it was made from
        meta = dict(obj.get("meta", {}))
        return obj["state_dict"], {"weights": spec, "pretrained": bool(meta.get("pretrained", False)), **meta}
    return obj, {"weights": spec, "pretrained": True}
