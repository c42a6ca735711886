"""Zoo model by name: `build("dlib")` reads the converted weights from the cache and returns a frozen ZooModel.

A model is added by one builder here (`BUILDERS[name] = function(state) -> ZooModel`, where `state` is what its
converter in `fetch.CONVERTERS` returned) and its pinned source in `fetch.SOURCES`. Building never touches the
network or the package's original file: a missing or stale converted file is a `ZooMissing` naming the fetch
command.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from maskgan.models.zoo import dlib_resnet, fetch
from maskgan.models.zoo.base import ZOO_NAMES, ZooMissing
from maskgan.models.zoo.model import ZooModel

Builder = Callable[[dict], ZooModel]


def _build_dlib(state: dict) -> ZooModel:
    return dlib_resnet.from_state(state)


def _build_port(name: str) -> Builder:
    def build_port(state: dict) -> ZooModel:
        import importlib

        return importlib.import_module(f"maskgan.models.zoo.{name}").from_state(state)

    return build_port


BUILDERS: dict[str, Builder] = {"dlib": _build_dlib,
                                **{name: _build_port(name) for name in ("faceplugin", "expo", "hse")}}


def fetch_hint(name: str, cache_dir: str | None) -> str:
    where = f" --dir {cache_dir}" if cache_dir else ""
    return f"{fetch.FETCH_COMMAND} --only {name}{where}"


def build(name: str, cache_dir: str | None = None, device: str | torch.device = "cpu") -> ZooModel:
    """The zoo model `name` (one of ZOO_NAMES) on `device`, frozen and in eval mode, its provenance filled."""
    if name not in ZOO_NAMES:
        raise ZooMissing(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
    if name not in BUILDERS:
        raise ZooMissing(f"zoo model {name!r} has no port in this version (known: {', '.join(BUILDERS)})")
    path = fetch.converted_path(name, cache_dir)
    if not os.path.isfile(path):
        raise ZooMissing(f"zoo model {name!r}: {path} not found; fetch and convert it with: "
                         f"{fetch_hint(name, cache_dir)}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: say how to redo it rather than show a pickle traceback
        raise ZooMissing(f"zoo model {name!r}: {path} is unreadable ({type(e).__name__}); redo it with: "
                         f"{fetch_hint(name, cache_dir)} --force") from None
    if saved.get("format") != fetch.FORMAT or saved.get("source") != fetch.source_record(name):
        raise ZooMissing(f"zoo model {name!r}: {path} was converted from another source or converter; redo it "
                         f"with: {fetch_hint(name, cache_dir)}")
    model = BUILDERS[name](saved["state"])
    model.provenance = fetch.SOURCES[name].provenance()
    model.requires_grad_(False)
    return model.to(device).eval()
