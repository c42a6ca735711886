"""Feeding the step: decoded numpy batches -> the step's tensors, and the rows a worker keeps on its device.

`constants` computes what the step needs of each image that does not change during a run (the projector's
alpha, the trunk features of the real photos); `ResidentShard` keeps a worker's rows with those constants on
its device after the first epoch; `streamed_batches` draws batches from Ray Data's stream. No `ray.train`
here: the worker (maskgan.training.worker) decides which source an epoch draws from.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from data_loader import shards, storage, stream
from maskgan.config import RunConfig, zoo_name
from maskgan.design import physical
from maskgan.models.generators import CONDITIONAL
from maskgan.models.ops import features, to_float_images
from maskgan.models.recognizer import FEATURE_DIM
from maskgan.models.zoo_surrogate import landmarks_column
from maskgan.training.objective import HEAD_TERMS, amp


def _to_device(array: np.ndarray, device) -> torch.Tensor:
    """Host array -> device tensor with its dtype (uint8 images cross as uint8: a quarter of float32's bytes,
    made float on the device). Pinned on CUDA, so the copy overlaps the kernels the host queues next."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def constants(raw: dict, projector, trunk, experiment: str, device, autocast=None, conditional: bool = False,
              surrogate_trunks: tuple = ()) -> dict:
    """A decoded numpy batch -> what the step needs of each image: masked (uint8, on the device), label, the
    mask space (physical.mask_warp of the projector's alpha: `grid` from the design template onto the mask
    region and `alpha` confined to it, both fp32), and the trunk features of the real photos that the
    experiment's head terms use.

    The projector and trunk are frozen, so the mask space and the features are constants of the image: a worker whose
    rows stay resident (`ResidentShard`) computes them once per run, a streaming worker once per epoch; the
    step itself never runs the projector or a trunk pass on real photos. With model.recognizers surrogates
    (`surrogate_trunks`), each one's features of the same real photos too, for its own head's exp2/exp3 terms:
    `s_feats_unmasked` / `s_feats_masked` [B, surrogates, widest] (rows first, so resident rows index them), and
    for zoo surrogates each row's `landmarks` [B, 68, 2] (NaN: unknown), which their trunks align from."""
    masked_u8 = _to_device(raw["masked"], device)
    out = {"masked_u8": masked_u8, "label": _to_device(raw["label"].astype(np.int64), device)}
    if any(getattr(t, "needs_landmarks", False) for t in surrogate_trunks):  # zoo surrogates align from them
        out["landmarks"] = _to_device(landmarks_column(raw, len(raw["label"])), device)
    masked = to_float_images(masked_u8)
    terms = HEAD_TERMS[experiment]

    def each_surrogate(photos):  # [B, surrogates, widest]: trunks of different widths, zero-padded
        f = [features(t, photos, out.get("landmarks")) for t in surrogate_trunks]
        width = max(x.shape[1] for x in f)
        return torch.stack([F.pad(x, (0, width - x.shape[1])) for x in f], 1)

    with torch.no_grad(), amp(device, autocast):
        alpha = projector(masked)
        if "unmasked" in terms or conditional:
            unmasked = to_float_images(_to_device(raw["unmasked"], device))
            out["feats_unmasked"] = trunk(unmasked)
            if "unmasked" in terms and surrogate_trunks:
                out["s_feats_unmasked"] = each_surrogate(unmasked)
        if "original_mask" in terms:
            out["feats_masked"] = trunk(masked)
            if surrogate_trunks:
                out["s_feats_masked"] = each_surrogate(masked)
    out["grid"], out["alpha"] = physical.mask_warp(alpha.float())
    return out


def step_tensors(c: dict) -> dict:
    """`constants`' output -> the step's batch (masked as float [B,3,S,S] in [0,1], converted on the device)."""
    batch = {k: v for k, v in c.items() if k != "masked_u8"}
    batch["masked"] = to_float_images(c["masked_u8"])
    return batch


def step_batch(raw: dict, projector, trunk, experiment: str, device, autocast=None, conditional: bool = False,
               surrogate_trunks: tuple = ()) -> dict:
    """Decoded numpy batch -> the step's tensors: projector alpha, and real-photo trunk features when the
    experiment's head terms or a conditional generator need them (constants: the projector and trunk are frozen)."""
    return step_tensors(constants(raw, projector, trunk, experiment, device, autocast, conditional, surrogate_trunks))


class ResidentShard:
    """This worker's rows with their constants, kept on its device after the first epoch it streams.

    Later epochs draw batches from here, in a fresh random order each epoch, instead of from Ray Data, and
    never recompute alpha or features: the GPU is fed from its own memory (the issue measured a naive Ray
    Data feed at ~71-85 % of a GPU-resident one). Trade-offs: after the first epoch each worker keeps the rows
    it was given (together the workers still see every row once per epoch; the shuffle within a worker is
    global rather than a local buffer), and a worker holds its share in device memory, so this is used only
    when the whole share fits `train.resident_gib`, decided from the manifest before the first batch (the
    same on every worker). Otherwise every epoch streams, memory stays flat in dataset size, and the
    constants are recomputed once per epoch.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity  # rows this worker may keep; 0: stream every epoch
        self.rows = 0
        self.ready = False
        self.overflow = False
        self._store: dict[str, torch.Tensor] = {}

    @staticmethod
    def row_bytes(size: int, experiment: str, autocast, conditional: bool = False, surrogates: int = 0,
                  landmarks: bool = False) -> int:
        eb = 4 if autocast is None else torch.finfo(autocast).bits // 8
        terms = HEAD_TERMS[experiment]
        real = ("unmasked" in terms) + ("original_mask" in terms)  # each trunk's real-photo features
        feats = real + (conditional and "unmasked" not in terms) + surrogates * real
        # uint8 photo, fp32 alpha and fp32 warp grid (2 per pixel), features, label, fp32 landmarks (zoo surrogates)
        return size * size * 3 + size * size * 4 * 3 + feats * FEATURE_DIM * eb + 8 + landmarks * 68 * 2 * 4

    def add(self, c: dict) -> None:
        """Keep one batch of `constants`' output (preallocated once: no concatenation peak)."""
        if self.overflow or self.capacity == 0:
            return
        n = int(c["label"].shape[0])
        if self.rows + n > self.capacity:  # more rows than the manifest promised: give up, keep streaming
            self.overflow, self._store = True, {}
            return
        if not self._store:
            self._store = {k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
                           for k, v in c.items()}
        for k, v in c.items():
            self._store[k][self.rows:self.rows + n] = v
        self.rows += n

    def seal(self, agree=lambda ok: ok) -> bool:
        """End of the filling epoch: resident from now on if every worker filled its store (`agree` reduces
        the flag over workers: one that streamed alone would wait forever on Ray Data's split)."""
        if agree(not self.overflow and self.rows > 0):
            self._store = {k: v[:self.rows] for k, v in self._store.items()}
            self.ready = True
        else:
            self._store, self.capacity = {}, 0
        return self.ready

    def batches(self, batch_size: int, seed: int):
        """(step batch, seconds spent assembling it) over every resident row, in a seeded random order."""
        order = torch.randperm(self.rows, generator=torch.Generator().manual_seed(seed))
        order = order.to(self._store["label"].device)
        for i in range(0, self.rows, batch_size):
            t0 = time.perf_counter()
            idx = order[i:i + batch_size]
            batch = step_tensors({k: v.index_select(0, idx) for k, v in self._store.items()})
            yield batch, time.perf_counter() - t0


def resident_capacity(cfg: RunConfig, root: storage.Location, size: int, world_size: int, device, autocast,
                      log=None) -> int:
    """Rows this worker may keep resident (its share of the train set at `root`), or 0 when that does not fit."""
    budget = cfg.train.resident_gib
    device = torch.device(device)
    if budget == "auto":
        budget = 0.4 * torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 0.0
    if budget <= 0 or cfg.train.epochs < 2:
        return 0
    total = sum(int(s["rows"]) for s in shards.set_shards(root, shards.read_manifest(root), "train"))
    rows = -(-total // world_size)
    need = rows * ResidentShard.row_bytes(size, cfg.objective.experiment, autocast,
                                          cfg.model.generator in CONDITIONAL, len(cfg.model.recognizers),
                                          any(zoo_name(s) for s in cfg.model.recognizers)) / 2**30
    if need > budget:
        if log:
            log(f"[{cfg.train.name}] streaming every epoch: a worker's {rows} rows need {need:.2f} GiB "
                f"resident, train.resident_gib allows {budget:.2f}")
        return 0
    return rows


def all_workers_agree(flag: bool, device) -> bool:
    """`flag` reduced over the workers (all of them must agree), or `flag` itself outside distributed runs."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def streamed_batches(shard, cfg: RunConfig, epoch: int, projector, trunk, device, autocast, resident, stats,
                     surrogate_trunks: tuple = ()):
    """(step batch, seconds waited for data) from this worker's Ray Data shard; each batch's constants are kept in `resident`
    when given; rows of corrupt shards are counted in `stats` and never used."""
    for raw, waited in stream.timed_batches(shard, cfg.data.batch_size, cfg.data.shuffle_buffer,
                                            cfg.data.prefetch_batches, seed=cfg.train.seed + epoch, stats=stats):
        c = constants(raw, projector, trunk, cfg.objective.experiment, device, autocast,
                      cfg.model.generator in CONDITIONAL, surrogate_trunks)
        if resident is not None:
            resident.add(c)
        yield step_tensors(c), waited


