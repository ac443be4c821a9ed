"""What the sampling and evaluation commands share: the policy they work on, and how they report user errors.

A command works on a preset's base model, on another base model folder of the same family (``model``), or on a
trained checkpoint (a run or checkpoint folder, whose own saved config then decides what runs). A user error
(a bad preset, a missing file, an unloadable model or checkpoint) is one line ``error: ...`` on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import sys

import torch

from . import checkpoint
from .config import Config, preset
from .policy import ModelNotAvailable, load_policy

USER_ERRORS = (ValueError, FileNotFoundError, checkpoint.CheckpointError, ModelNotAvailable)


def load(preset_name: str, ckpt: str | None = None, model: str | None = None):
    """(config, policy) of a preset's base model (or of another base model folder `model`), or of a trained
    checkpoint (a run or checkpoint folder; then its own config decides what runs)."""
    if ckpt and model:
        raise ValueError("give a base model folder or a trained checkpoint, not both")
    cfg = preset(preset_name)
    cfg.model = model or cfg.model
    if ckpt:
        path = checkpoint.resolve(ckpt)
        trained = Config(**checkpoint.verify(path)["config"])
        if (trained.family, trained.model, trained.rewards) != (cfg.family, cfg.model, cfg.rewards):
            # the checkpoint's own config decides what is sampled and scored (a run may have set another model
            # with --set model=...); say so rather than score something else than the preset silently
            print(f"note: {ckpt} was trained from {trained.model} ({trained.family}) with rewards {trained.rewards}; "
                  f"preset {preset_name!r} has {cfg.model} ({cfg.family}) with {cfg.rewards}: sampling and scoring with "
                  "the checkpoint's own config", file=sys.stderr)
        cfg = trained
    policy = load_policy(cfg.family, cfg.model, dtype=getattr(torch, cfg.dtype), lora_rank=cfg.lora_rank,
                         lora_alpha=cfg.lora_alpha or None, keep_reference=False,
                         device="cuda" if torch.cuda.is_available() else "cpu")
    policy.check_size(cfg.height, cfg.width, cfg.frames or None)
    if ckpt:
        checkpoint.load_trainable(policy, path / checkpoint.TRAINABLE)
    return cfg, policy


def model_options(ap, presets: list[str], default: str) -> None:
    """The options of a measurement on a ShapesWorld model: --preset, and --model or --checkpoint (load's arguments)."""
    ap.add_argument("--preset", default=default, choices=presets)
    ap.add_argument("--model", default=None, help="a model folder instead of the preset's (e.g. a pretraining output)")
    ap.add_argument("--checkpoint", default=None, help="a training run or checkpoint folder of the preset (a trained policy)")


def command(main):
    """Wrap a command's main(argv) -> exit code: a user error becomes `error: ...` on stderr and exit code 2."""
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    wrapped.__doc__ = main.__doc__
    return wrapped
