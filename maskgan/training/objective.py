"""The science: identification against a gallery, the experiments, and THE training step.

Identification: a photo's embedding is compared (cosine) with the embeddings of one unmasked photo of every
identity (the gallery, all splits); the nearest is the prediction. Training uses the same geometry as a
softmax: logit_i = scale * cos(probe, gallery_i), cross-entropy against the true identity.

The step: the generator makes one design per image, a flat mask panel (mask space, maskgan.design.physical); the
design is worn: warped onto the photo's mask region (the warp and alpha from the frozen projector), shaded with
the original mask's lighting, composited (with `physical.enabled`, printed and photographed through random
transforms on the way: EOT); the frozen trunk embeds the face, and
  - the generator MAXIMISES the recogniser's cross-entropy on those faces, less tv_weight x TV and
    nps_weight x NPS of its designs (maskgan.design.physical: smooth, printable designs; both 0 by default),
    less diversity_weight x MSGAN's mode-seeking term (maskgan.design.diversity: designs that differ; 0 by default),
    and for a conditional generator also x the wearer-seeking term (one latent, two wearers: designs per person);
  - the recogniser head MINIMISES cross-entropy + lambda * L1 on the mixture the experiment names:
        exp0: nothing (frozen)       exp1: generated-mask faces
        exp2: + unmasked faces       exp3: + original-mask faces
With `Models.surrogates` (config `model.recognizers`) the generator attacks an ensemble: every
surrogate's frozen trunk embeds the same worn faces, its own head scores them against its own gallery
features, and the generator maximises the MEAN cross-entropy over the attacked recognisers; each surrogate's
head takes its own step on its own loss with its own optimiser, on the experiment's mixture in its own trunk's
features (exp0: none; exp2/exp3: maskgan.training.feed computes every surrogate trunk's features of the real photos).

`train_step` is pure: models, optimisers, a batch and the config in; a flat dict of floats out. No Ray, no
rank checks. The local run, the Ray Train worker, Tune trials, the benchmark and the tests all call it.

Why it is fast (bench/step.py measures it against the paper's structure): the trunk is frozen (no weight
gradients, BatchNorm statistics fixed), so only the generated faces take a trunk pass with a backward, and that
backward goes to the input alone; the mask space (warp and alpha) and the real photos' trunk features are per-image
constants computed outside the step (maskgan.training.feed keeps them with the worker's rows); one design per image
(a batch of latents) so a batch of any size is one pass; forward passes run under bf16 autocast on CUDA
(`Models.autocast`, from train.precision) with the trunk in channels_last, and `accelerate` can compile the
trunk; the step's scalars come back to the host in one transfer (one device sync per step).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from maskgan.config import ObjectiveConfig
from maskgan.design import diversity, palette, physical
from maskgan.models.generators import is_conditional
from maskgan.models.ops import head_optimizer, features, l1, logits, unwrap
from maskgan.models.recognizer import Surrogate

HEAD_TERMS = {"exp0": (), "exp1": ("generated",), "exp2": ("generated", "unmasked"),
              "exp3": ("generated", "unmasked", "original_mask")}


@dataclass
class Models:
    generator: nn.Module  # possibly DDP-wrapped
    trunk: nn.Module  # frozen
    head: nn.Module  # possibly DDP-wrapped; trained unless exp0
    latent_dim: int
    autocast: torch.dtype | None = None  # forward passes under autocast to this dtype (bf16 on CUDA); None: fp32
    palette: torch.Tensor | None = None  # [P,3] in [0,1], what objective.nps_weight measures against
    eot: object | None = None  # physical.EOT (config `physical.enabled`): generated faces printed and photographed
    # attacked together with trunk + head, each with the gallery the step trains against; (): the single recogniser
    surrogates: tuple[Surrogate, ...] = ()


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer
    head: torch.optim.Optimizer | None  # None for exp0
    surrogates: tuple = ()  # one per Models.surrogates, in order (None for exp0)


def make_optimizers(generator: nn.Module, head: nn.Module, cfg: ObjectiveConfig, surrogates=()) -> Optimizers:
    """The one optimiser setup of the GAN: Adam for the generator (betas 0.5, 0.999: the DCGAN setting the
    paper follows) and Adam for each recogniser head (the attacked one, then each surrogate's) unless the
    experiment freezes it (exp0). Takes the modules wrapped or not: the optimisers hold the underlying parameters."""
    g_opt = torch.optim.Adam(unwrap(generator).parameters(), lr=cfg.g_lr, betas=(0.5, 0.999))

    def head_opt(h):
        return head_optimizer(h, cfg.head_lr) if HEAD_TERMS[cfg.experiment] else None

    return Optimizers(generator=g_opt, head=head_opt(head), surrogates=tuple(head_opt(s.head) for s in surrogates))


def _palette(models: Models) -> torch.Tensor:
    if models.palette is None:  # the step's callers that never set one (tests, the benchmark): the default

        return palette.DEFAULT.tensor()
    return models.palette


def design(generator: nn.Module, n: int, latent_dim: int, device, z: torch.Tensor | None = None,
           cond: torch.Tensor | None = None) -> torch.Tensor:
    """n designs from fresh N(0, 1) latents, or from the given latents `z` [n, latent_dim]; a conditional
    generator's also from `cond` [n, 1792], each wearer's unmasked-photo trunk features."""
    z = torch.randn(n, latent_dim, device=device) if z is None else z
    return generator(z) if cond is None else generator(z, cond)


def amp(device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device` (a no-op context for None)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def resolve_precision(precision: str, device) -> torch.dtype | None:
    """train.precision -> the autocast dtype of the step. auto: bf16 on CUDA (tensor cores; about 2x the
    trunk's fp32 rate there), fp32 elsewhere (CPU bf16 convolutions gain little and fp32 is exact)."""
    if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    if precision in ("auto", "fp32"):
        return None
    raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")


def accelerate(models: Models, device, precision: str = "auto", compile: bool = False) -> Models:
    """The step's speed settings, one place for the worker and the benchmark: autocast dtype, the trunk in
    channels_last on CUDA (cuDNN's fast layout for bf16 convolutions) with cuDNN autotuning, and optionally a
    compiled trunk (dynamic=False: one graph per batch shape, so the last short batch of an epoch compiles
    once more; the first steps pay the compile). Weights are shared with `models`: nothing is copied."""
    device = torch.device(device)

    def fast(trunk):
        if device.type == "cuda":
            trunk = trunk.to(memory_format=torch.channels_last)
            # Batch shapes repeat every step: let cuDNN time its kernels once per shape and keep the fastest
            # (process-wide; it changes which kernels run, not what they compute beyond rounding).
            torch.backends.cudnn.benchmark = True
        return torch.compile(trunk, dynamic=False) if compile else trunk

    return replace(models, trunk=fast(models.trunk), autocast=resolve_precision(precision, device),
                   surrogates=tuple(replace(s, trunk=fast(s.trunk)) for s in models.surrogates))


def train_step(models: Models, opts: Optimizers, batch: dict, gallery_feats: torch.Tensor,
               cfg: ObjectiveConfig) -> dict[str, float]:
    """One adversarial step. batch: masked [B,3,S,S] float, grid [B,S,S,2] and alpha [B,1,S,S] (the mask space:
    physical.mask_warp of the projector's output), label [B]; for exp2/exp3 also feats_unmasked / feats_masked
    [B,1792] (trunk features of the real photos; feats_unmasked also for a conditional generator: its cond), and
    with surrogates s_feats_unmasked / s_feats_masked [B,surrogates,widest] (each surrogate trunk's, zero-padded),
    and with zoo surrogates `landmarks` [B,68,2] (each photo's, NaN where unknown: maskgan.models.zoo_surrogate). All
    are per-image constants computed outside the step (maskgan.training.feed)."""
    heads = [unwrap(models.head), *(unwrap(s.head) for s in models.surrogates)]
    # Generator: maximise the cross-entropy of the recogniser as deployed (eval mode). The heads are
    # constants here (their own updates come from their own losses below): their parameters leave this graph.
    for h in heads:
        h.eval()
        h.requires_grad_(False)
    worn = _wear_designs(models, batch, cfg)
    attack = _attack(models, worn.faces, batch, gallery_feats, cfg)
    g_loss, design_scalars = _generator_loss(models, worn, attack, cfg)
    opts.generator.zero_grad(set_to_none=True)
    g_loss.backward()
    opts.generator.step()
    for h in heads:
        h.requires_grad_(True)

    scalars = _attack_scalars(attack, batch["label"], design_scalars)
    terms = HEAD_TERMS[cfg.experiment]
    if terms:
        scalars.update(_heads_update(models, opts, batch, attack, gallery_feats, cfg, terms))
    # One transfer (one device sync) for every scalar of the step, not one per .item().
    values = torch.stack([v.to(torch.float64) for v in scalars.values()]).tolist()
    out = dict(zip(scalars, values))
    if not terms:
        out["train/head_loss"] = 0.0
    return out


@dataclass
class _Worn:
    """The generator's side of a step: its designs, the latents that made them, and the faces wearing them."""

    designs: torch.Tensor  # [B,3,h,w], one per image
    z: torch.Tensor  # [B, latent_dim]: kept, the mode-seeking term needs them
    faces: torch.Tensor  # [B,3,S,S]: each photo wearing its design
    half: int = 0  # wearer seeking: how many of the first latents were drawn again on other wearers
    others: torch.Tensor | None = None  # [half,3,h,w]: those designs, on the second half's wearers


def _wear_designs(models: Models, batch: dict, cfg: ObjectiveConfig) -> _Worn:
    """One design per image from fresh latents (a conditional generator's for each wearer), worn on the photo
    (printed and photographed on the way with EOT)."""
    masked = batch["masked"]
    space = physical.MaskSpace(batch["grid"], batch["alpha"])
    n = masked.shape[0]
    others = None
    with amp(masked.device, models.autocast):
        z = torch.randn(n, models.latent_dim, device=masked.device)
        cond = batch["feats_unmasked"] if is_conditional(models.generator) else None  # each wearer's own design
        half = n // 2 if cond is not None and cfg.diversity_weight else 0
        if half:  # wearer seeking: the first half's latents again, on the second half's wearers (one forward)
            both = design(models.generator, n + half, models.latent_dim, masked.device,
                          torch.cat([z, z[:half]]), torch.cat([cond, cond[half:2 * half]]))
            designs, others = both[:n], both[n:]
        else:
            designs = design(models.generator, n, models.latent_dim, masked.device, z, cond)
        if models.eot is None:
            faces = physical.wear(masked, space, designs)
    if models.eot is not None:  # kornia's transforms in fp32, outside autocast
        faces = models.eot.wear(masked, space, designs.float())
    return _Worn(designs, z, faces, half, others)


@dataclass
class _Attack:
    """The worn faces as every attacked recogniser sees them: the primary's, then each surrogate's."""

    feats: torch.Tensor  # the primary trunk's features of the faces
    logits: torch.Tensor
    ce: torch.Tensor
    s_feats: list  # per surrogate, its own trunk's features
    s_logits: list
    s_ce: list


def _attack(models: Models, faces: torch.Tensor, batch: dict, gallery_feats: torch.Tensor,
            cfg: ObjectiveConfig) -> _Attack:
    label = batch["label"]
    with amp(batch["masked"].device, models.autocast):
        feats = models.trunk(faces)
        gen_logits = logits(unwrap(models.head), feats, gallery_feats, cfg.cosine_scale)
        gen_ce = F.cross_entropy(gen_logits, label)
        # Each surrogate embeds the same worn faces with its own trunk and head, against its own gallery.
        s_feats = [features(s.trunk, faces, batch.get("landmarks")) for s in models.surrogates]
        s_logits = [logits(unwrap(s.head), f, s.gallery_feats, cfg.cosine_scale)
                    for s, f in zip(models.surrogates, s_feats)]
        s_ce = [F.cross_entropy(lg, label) for lg in s_logits]
    return _Attack(feats, gen_logits, gen_ce, s_feats, s_logits, s_ce)


def _generator_loss(models: Models, worn: _Worn, attack: _Attack,
                    cfg: ObjectiveConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's loss (to minimise) and its design terms' scalars."""
    s_ce = attack.s_ce
    # The ensemble's loss is the mean over every attacked recogniser (the single one: exactly -gen_ce).
    g_loss = -(attack.ce + sum(s_ce)) / (1 + len(s_ce)) if s_ce else -attack.ce
    scalars = {}
    designs = worn.designs
    if cfg.tv_weight or cfg.nps_weight:
        designs = designs.float()  # the printability terms in fp32 (small tensors; bf16 would blur TV)
        tv, nps = physical.tv(designs).mean(), physical.nps(designs, _palette(models)).mean()
        g_loss = g_loss + cfg.tv_weight * tv + cfg.nps_weight * nps
        scalars = {"train/design_tv": tv.detach(), "train/design_nps": nps.detach()}
    if cfg.diversity_weight and designs.shape[0] > 1:  # mode seeking: pairs within the batch; one image has none
        seek, lz = diversity.mode_seeking(designs, worn.z)
        g_loss, scalars["train/design_diversity"] = g_loss + cfg.diversity_weight * seek, lz.detach()
        if worn.half:  # and across people: one latent, two wearers (designs for a person)
            seek_c, lc = diversity.wearer_seeking(designs[:worn.half], worn.others)
            g_loss, scalars["train/design_diversity_people"] = g_loss + cfg.diversity_weight * seek_c, lc.detach()
    return g_loss, scalars


def _attack_scalars(attack: _Attack, label: torch.Tensor, design_scalars: dict) -> dict[str, torch.Tensor]:
    scalars = {"train/gen_ce": attack.ce.detach(), "train/gen_acc": (attack.logits.argmax(1) == label).float().mean(),
               **design_scalars}
    s_ce = attack.s_ce
    if s_ce:  # the primary keeps today's names; these cover every attacked recogniser
        scalars["train/gen_ce_mean"] = (attack.ce.detach() + sum(c.detach() for c in s_ce)) / (1 + len(s_ce))
        accs = [(lg.argmax(1) == label).float().mean() for lg in (attack.logits, *attack.s_logits)]
        scalars["train/gen_acc_mean"] = sum(accs) / len(accs)
        scalars["train/gen_acc_min"] = torch.stack(accs).min()  # the recogniser the designs fool least
    return scalars


def _heads_update(models: Models, opts: Optimizers, batch: dict, attack: _Attack, gallery_feats: torch.Tensor,
                  cfg: ObjectiveConfig, terms: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Recogniser heads: each minimises cross-entropy + lambda * L1 on the experiment's mixture `terms`."""
    label, feats = batch["label"], attack.feats
    parts = {"generated": feats.detach(), "unmasked": batch.get("feats_unmasked"),
             "original_mask": batch.get("feats_masked")}
    probe = torch.cat([parts[t].to(feats.dtype) for t in terms])
    ce, head_loss = _head_update(models.head, opts.head, probe, gallery_feats, label.repeat(len(terms)), cfg,
                                 models.autocast)
    # Each surrogate's head on the same mixture, in its own trunk's features (the real photos' from feed:
    # s_feats_unmasked / s_feats_masked [B, surrogates, widest], each zero-padded to the widest trunk's).
    real = {"unmasked": "s_feats_unmasked", "original_mask": "s_feats_masked"}
    for i, (s, f, opt) in enumerate(zip(models.surrogates, attack.s_feats, opts.surrogates)):
        probe = torch.cat([f.detach() if t == "generated" else batch[real[t]][:, i, :f.shape[1]].to(f.dtype)
                           for t in terms])
        _head_update(s.head, opt, probe, s.gallery_feats, label.repeat(len(terms)), cfg, models.autocast)
    return {"train/head_ce": ce.detach(), "train/head_loss": head_loss.detach()}


def _head_update(head: nn.Module, opt: torch.optim.Optimizer, probe: torch.Tensor, gallery_feats: torch.Tensor,
                 label: torch.Tensor, cfg: ObjectiveConfig, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a recogniser head (wrapped or not): cross-entropy + lambda * L1, in training mode (its
    BatchNorm over probes and gallery), back in eval mode after. Returns (ce, loss)."""
    unwrap(head).train()
    with amp(probe.device, autocast):
        head_logits = logits(head, probe, gallery_feats, cfg.cosine_scale)
        ce = F.cross_entropy(head_logits, label)
    head_loss = ce + cfg.l1_lambda * l1(head)
    opt.zero_grad(set_to_none=True)
    head_loss.backward()
    opt.step()
    unwrap(head).eval()
    return ce, head_loss


# ---- identification (evaluation uses the same embedding as training) -------------------------------------


