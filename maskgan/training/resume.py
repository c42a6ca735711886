"""A worker's start from a checkpoint (maskgan.run.checkpoints.starting_checkpoint chose it): the generator's and
heads' weights before DDP wraps them, then the optimisers' state with this config's learning rates."""

from __future__ import annotations

from maskgan.config import RunConfig
from maskgan.run import checkpoints
from maskgan.training.objective import Optimizers


def load_weights(start: checkpoints.Start | None, generator, head, cfg: RunConfig, say, surrogates=()) -> int:
    """Load the starting checkpoint's generator and heads (before DDP wraps them); the first epoch to train.
    (checkpoints.starting_checkpoint checked that its surrogates are the config's, in order.)"""
    if start is None:
        return 0
    generator.load_state_dict(start.state["generator"])
    head.load_state_dict(start.state["head"])
    for s, saved in zip(surrogates, start.state.get("surrogates", [])):
        s.head.load_state_dict(saved["head"])
    start_epoch = start.state["epoch"] + 1
    if say:
        how = "resumed from" if start.resumed else f"started from {cfg.train.init_from}:"
        say(f"{how} the checkpoint of epoch {start_epoch}")
    return start_epoch


def load_optimizers(start: checkpoints.Start | None, opts: Optimizers, cfg: RunConfig) -> None:
    if start is None:
        return
    opts.generator.load_state_dict(start.state["g_opt"])
    if opts.head is not None and start.state["h_opt"]:
        opts.head.load_state_dict(start.state["h_opt"])
    for opt, saved in zip(opts.surrogates, start.state.get("surrogates", [])):
        if opt is not None and saved["h_opt"]:
            opt.load_state_dict(saved["h_opt"])
    # The learning rates are this config's, not the saved ones: the same on a resume, the mutated ones
    # when PBT starts a trial from another's checkpoint; Adam's moments carry over either way.
    _set_lr(opts.generator, cfg.objective.g_lr)
    for opt in (opts.head, *opts.surrogates):
        _set_lr(opt, cfg.objective.head_lr)


def _set_lr(opt, lr: float) -> None:
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = lr
