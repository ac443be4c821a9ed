"""Rewards (phase 2 of an iteration: sample -> reward -> advantage -> update).

A reward is a callable ``fn(pixels, prompts) -> Tensor [B]`` (float32, on any device) where pixels are
decoded samples in [0, 1]: images (B, 3, H, W) or videos (B, 3, F, H, W). The registry ``REWARDS``
maps a name to a factory ``make(device) -> fn``; :func:`build_rewards` builds the configured ones
and :func:`reward` evaluates them all into a dict ``{name: [B]}``.

A reward may return NaN or inf for a sample it cannot score; the advantage phase excludes such
samples from their group (groups.py) and the trainer counts them.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .media import uint8_frames

RewardFn = Callable[[torch.Tensor, list], torch.Tensor]


def _jpeg_kilobytes(pixels: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Size in kB of each sample saved as JPEG (mean over frames for videos). [B] float32.

    JPEG encoding is a per-image C call in PIL: the loop is over images, not over pixels.
    """
    frames = uint8_frames(pixels).numpy()
    sizes = np.zeros(frames.shape[:2], dtype=np.float32)
    for b, f in np.ndindex(*sizes.shape):
        buf = io.BytesIO()
        Image.fromarray(frames[b, f]).save(buf, format="JPEG", quality=quality)
        sizes[b, f] = buf.tell() / 1000.0
    return torch.from_numpy(sizes.mean(1))


def jpeg_compressibility(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """Minus the JPEG size in kB (DDPO, Black et al. 2023): rewards simple, flat, compressible images.
    Model-free and prompt-independent; gamed by blank images, which is the point of the DDPO task."""
    return -_jpeg_kilobytes(pixels).to(pixels.device)


def jpeg_incompressibility(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """The JPEG size in kB (DDPO): rewards detail and texture; gamed by high-frequency noise."""
    return _jpeg_kilobytes(pixels).to(pixels.device)


def brightness(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """Mean pixel value in [0, 1]: the simplest learnable reward, used by the learning test and demo."""
    return pixels.float().flatten(1).mean(1)


REWARDS: dict[str, Callable[[torch.device], RewardFn]] = {
    "jpeg_compressibility": lambda device: jpeg_compressibility,
    "jpeg_incompressibility": lambda device: jpeg_incompressibility,
    "brightness": lambda device: brightness,
}


def build_rewards(names, device="cpu") -> dict[str, RewardFn]:
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; registered rewards: {sorted(REWARDS)}")
    return {n: REWARDS[n](torch.device(device)) for n in names}


@torch.no_grad()
def reward(reward_fns: dict[str, RewardFn], pixels: torch.Tensor, prompts: list) -> dict[str, torch.Tensor]:
    """Evaluate every reward on a batch. -> {name: [B] float32}; shape errors are caught here."""
    out = {}
    for name, fn in reward_fns.items():
        r = torch.as_tensor(fn(pixels, prompts)).float()
        if r.shape != (pixels.shape[0],):
            raise ValueError(f"reward {name!r} returned shape {tuple(r.shape)}, expected ({pixels.shape[0]},)")
        out[name] = r
    return out


# The ShapesWorld testbed's exact rewards: level 1 (sw_color, ..., sw_motion; otca_lib/shapesworld.py) and
# level 2 (sw2_color, ..., sw2_pattern; otca_lib/shapesworld2.py).
from . import shapesworld as _sw, shapesworld2 as _sw2  # noqa: E402

REWARDS.update(_sw.REWARDS)
REWARDS.update(_sw2.REWARDS)


def shapesworld_objectives(names, video: bool) -> list[str]:
    """Every ShapesWorld objective of the level that the reward `names` use (level 2 if any starts with 'sw2_',
    level 1 if any with 'sw_'), those that apply to images or videos; [] for other rewards."""
    kind = "video" if video else "image"
    if any(n.startswith("sw2_") for n in names):
        return list(_sw2.OBJECTIVES.get(kind, []))
    if any(n.startswith("sw_") for n in names):
        return list(_sw.OBJECTIVES[kind])
    return []


def alignment_parts(name: str, video: bool) -> list[str]:
    """The ShapesWorld attribute scores whose mean is the alignment reward `name` (sw_alignment, sw2_alignment), for
    images or videos; [] for any other reward."""
    level = {"sw_alignment": _sw, "sw2_alignment": _sw2}.get(name)
    return list(level.ALIGNMENT_PARTS.get("video" if video else "image", [])) if level else []

# Model-based rewards (clip_score, pickscore, aesthetic, hpsv21, imagereward, video_*; otca_lib/reward_models.py):
# lazy factories, no weights are read until a reward is built. Local weights: $OTCA_* (docs/rewards.md).
from .reward_models import MODEL_REWARDS as _MODEL_REWARDS  # noqa: E402

REWARDS.update(_MODEL_REWARDS)
