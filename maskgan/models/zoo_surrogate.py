"""Real recognisers in the loop: a zoo model (maskgan.models.zoo) as a trunk + head, like the facenet recogniser.

A `zoo:<name>` spec in model.recognizers is attacked white-box exactly as a facenet surrogate is: its ported
network is the frozen trunk and its LAST parametrised layer is the head the experiment fine-tunes (a copy: the
pretrained weights never change). The trunk aligns each photo from its row's 68 landmarks with the model's own
differentiable warp (`ZooModel.alignment`, maskgan.models.zoo.align), so the generator's gradient flows from the
head's loss through the network and the warp into the composited photo.

`split(model)` finds the last layer (a model may name it as `last_layer`; otherwise the last leaf module with
parameters that runs) and checks that trunk + head reproduce the model's own embedding before anything uses them.

Landmarks: a batch carries `landmarks` [B, 68, 2] (x, y) pixels of the row's unmasked photo, NaN where the data
does not know them; such rows are aligned from `fallback` (the median of the gallery's known landmarks, a
constant of the dataset) and counted as not found by evaluation.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_loader import shards
from maskgan.config import zoo_name
from maskgan.models.zoo import ZooModel, registry
from maskgan.models.zoo import align  # the module: tests stand a box warp in for align.align
from maskgan.models.zoo.onnx_graph import GraphNet, GraphSpec

SPLIT_ATOL = 1e-4  # trunk + head must give the model's own embedding to this (unit-scale embeddings)


class ZooSplitError(ValueError):
    user_error = True


class _Stop(Exception):
    """Raised from the last layer's pre-hook: the trunk's forward ends where the head begins."""


def last_layer(model: ZooModel) -> nn.Module:
    """The module the head copies: `model.last_layer` when the model names one, else the last leaf module with
    parameters in the order a forward pass runs them."""
    named = getattr(model, "last_layer", None)
    if isinstance(named, nn.Module):
        return named
    ran: list[nn.Module] = []
    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(lambda mod, _i, _o: ran.append(mod)) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.rand(2, 3, model.alignment.size, model.alignment.size))
    finally:
        for h in hooks:
            h.remove()
    if not ran:
        raise ZooSplitError(f"zoo:{model.name}: no layer with parameters ran; nothing to fine-tune")
    return ran[-1]


class ZooTrunk(nn.Module):
    """Photos + landmarks -> the features the model's last layer takes, flattened [N, F]. Frozen, eval mode."""

    needs_landmarks = True  # ops.features passes each photo's landmarks

    def __init__(self, model: ZooModel, last: nn.Module | None, front=None):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self._last = [last]  # a list: the layer is the model's own submodule, not registered twice
        self._front = front  # a converted graph's: aligned -> the last layer's input (its nodes before it)
        self.fallback: torch.Tensor | None = None  # [68, 2]: where a row's landmarks are unknown (set_fallback)
        self.in_shape: tuple = ()  # the last layer's input shape per photo (set by split)

    def train(self, mode: bool = True):  # the pretrained statistics: never batch statistics
        return super().train(False)

    def aligned(self, images: torch.Tensor, landmarks68: torch.Tensor) -> torch.Tensor:
        return align.align(images, self.known(landmarks68.to(images.device)), self.model.alignment)

    def known(self, landmarks68: torch.Tensor) -> torch.Tensor:
        return fill_unknown(landmarks68, self.fallback, self.model.name)

    @property
    def provenance(self) -> dict | None:
        prov = self.model.provenance
        return dataclasses.asdict(prov) if prov is not None else None

    def forward(self, images: torch.Tensor, landmarks68: torch.Tensor) -> torch.Tensor:
        return self.features(self.aligned(images, landmarks68))

    def features(self, aligned: torch.Tensor) -> torch.Tensor:
        if self._front is not None:
            return self._front(aligned).flatten(1)
        seen: list[torch.Tensor] = []

        def stop(_module, args):
            seen.append(args[0])
            raise _Stop

        hook = self._last[0].register_forward_pre_hook(stop)
        try:
            self.model(aligned)
        except _Stop:
            pass
        finally:
            hook.remove()
        return seen[0].flatten(1)


class ZooHead(nn.Module):
    """A trainable copy of the model's last layer: features [N, F] -> L2-normalised embedding. (A converted
    graph's last layer keeps its frozen ONNX statistics: it has no BatchNorm of its own to switch.)"""

    def __init__(self, last: nn.Module, in_shape: tuple):
        super().__init__()
        self.layer = copy.deepcopy(last).requires_grad_(True)
        self.in_shape = tuple(in_shape)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layer(feats.view(-1, *self.in_shape)).flatten(1).float(), dim=1)


def split(model: ZooModel) -> tuple[ZooTrunk, ZooHead]:
    """(frozen trunk, trainable head) of a zoo model, checked to give the model's own embedding."""
    probe = torch.rand(2, 3, model.alignment.size, model.alignment.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if _is_graph(model):
            front, last = _graph_split(model)
            trunk = ZooTrunk(model, None, front)
            want, feats = model(probe), front(probe)
            trunk.in_shape = tuple(feats.shape[1:])
        else:
            last = last_layer(model)
            trunk = ZooTrunk(model, last)
            seen: list = []
            hook = last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1:]))
            try:
                want = model(probe)
            finally:
                hook.remove()
            trunk.in_shape = tuple(seen[0])
        head = ZooHead(last, trunk.in_shape).eval()
        got = head(trunk.features(probe))
    err = float((got - want.float()).abs().max()) if got.shape == want.shape else float("inf")
    if not err <= SPLIT_ATOL:
        raise ZooSplitError(f"zoo:{model.name}: its last layer ({type(last).__name__}) is not the whole head "
                            f"(trunk + head differ from the model by {err:.2g}); name it as `last_layer`")
    return trunk, head


def _is_graph(model) -> bool:
    """A converted graph (maskgan.models.zoo.graph_model): its layers are nodes, not submodules."""
    return hasattr(model, "network_input") and hasattr(getattr(model, "net", None), "nodes")


LAYER_OPS = ("Gemm", "Conv", "MatMul")  # a graph's last layer: its last node of these, and every node after it


def _graph_split(model) -> tuple:
    """(front: aligned -> the last layer's input, tail: a trainable graph from there to the output) of a
    converted graph. The tail's constants are copies: the model's own never change."""
    net = model.net
    k = max((i for i, n in enumerate(net.nodes) if n.op in LAYER_OPS), default=None)
    if k is None:
        raise ZooSplitError(f"zoo:{model.name}: its graph has no {'/'.join(LAYER_OPS)} node to fine-tune")
    tail, feat = net.nodes[k:], net.nodes[k].inputs[0]
    made = {feat} | {o for n in tail for o in n.outputs}
    consts = {i: net.const(i).detach().clone() for n in tail for i in n.inputs if i and i not in made}
    spec = GraphSpec(nodes=list(tail), consts=consts, input=feat, output=net.output)
    front_net = copy.copy(net)  # shares the model's parameters; runs its nodes up to the last layer only
    front_net.nodes, front_net.output = net.nodes[:k], feat

    def front(aligned):
        return front_net(model.network_input(aligned))

    last = GraphNet(spec)
    for p in last.parameters():
        p.requires_grad_(True)
    return front, last


def fill_unknown(landmarks68: torch.Tensor, fallback: torch.Tensor | None, name: str) -> torch.Tensor:
    """landmarks [N,68,2] with unknown rows (any NaN) replaced by `fallback` [68,2] (the gallery's median)."""
    missing = torch.isnan(landmarks68).flatten(1).any(1)
    if not missing.any():
        return landmarks68
    if fallback is None:
        raise ZooSplitError(f"zoo:{name}: photos without landmarks and no fallback landmarks (the data records "
                            f"none; prepare it again with a version that records the landmarks column)")
    return torch.where(missing.view(-1, 1, 1), fallback.to(landmarks68), landmarks68)


def median_landmarks(landmarks68: np.ndarray) -> torch.Tensor | None:
    """The median [68, 2] of the known rows of `landmarks68` [N, 68, 2] (NaN: unknown); None with none known."""
    known = landmarks68[~np.isnan(landmarks68).reshape(len(landmarks68), -1).any(1)]
    return torch.from_numpy(np.median(known, 0).astype(np.float32)) if len(known) else None


def set_fallback(trunk: ZooTrunk, landmarks68: np.ndarray) -> int:
    """The trunk's fallback: the median of the known rows of `landmarks68` [N, 68, 2] (NaN: unknown). Returns
    how many rows were known; with none, photos without landmarks are refused (ZooSplitError)."""
    trunk.fallback = median_landmarks(landmarks68)
    return int((~np.isnan(landmarks68).reshape(len(landmarks68), -1).any(1)).sum())


def landmarks_column(raw: dict, n: int) -> np.ndarray:
    """A decoded batch's `landmarks` as float32 [n, 68, 2], NaN for unknown rows (and for data without the
    column). Takes the decoded float array or a column of raw bytes (empty: unknown)."""
    value = raw.get("landmarks")
    out = np.full((n, 68, 2), np.nan, np.float32)
    if value is None:
        return out
    value = np.asarray(value) if not isinstance(value, list) else value
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.reshape(n, 68, 2).astype(np.float32)
    for i, b in enumerate(value):
        if b is not None and len(b):
            # numpy's fixed-width bytes drop trailing NULs (a float ending in 0x00): pad them back
            out[i] = np.frombuffer(bytes(b).ljust(68 * 2 * 4, b"\0"), dtype="<f4").reshape(68, 2)
    return out


def build(spec: str, device) -> tuple[ZooTrunk, ZooHead, dict]:
    """(trunk, head, desc) of a `zoo:<name>` surrogate: the split of the converted model (ZooMissing, one line,
    where its weights were never fetched); desc carries the model's provenance."""

    model = registry.build(zoo_name(spec), device=device)
    trunk, head = split(model)
    desc = {"weights": spec, "pretrained": True, "zoo": zoo_name(spec),
            **({"provenance": trunk.provenance} if trunk.provenance is not None else {})}
    return trunk.to(device), head.to(device).eval(), desc


def gallery_landmarks(root, trunk) -> np.ndarray | None:
    """For a zoo trunk: the gallery's landmarks in shard order, float32 [G, 68, 2] (NaN where unknown), after
    setting the trunk's fallback from them. None for any other trunk (it needs none)."""
    if not getattr(trunk, "needs_landmarks", False):
        return None
    marks = read_gallery_landmarks(root)
    set_fallback(trunk, marks)
    return marks


def read_gallery_landmarks(root) -> np.ndarray:
    """The gallery's landmarks in shard order (label order for prepared data), [G, 68, 2], NaN where unknown."""
    out = []
    for shard in shards.set_shards(root, shards.read_manifest(root), "gallery"):
        table = shards.read_table(root, shard)
        raw = {"landmarks": table.column("landmarks").to_pylist()} if "landmarks" in table.column_names else {}
        out.append(landmarks_column(raw, table.num_rows))
    return np.concatenate(out) if out else np.zeros((0, 68, 2), np.float32)
