"""Sampling and evaluation from the command line: a preset's model (base or trained) on a prompt file.

    python -m otca_lib.sample   --preset shapesworld2-image --prompts FILE --out DIR [--checkpoint DIR] [--seed N]
    python -m otca_lib.evaluate --preset shapesworld2-image [--checkpoint DIR | --folder DIR] [--prompts FILE]
                                [--samples-per-prompt N] [--json FILE]

``sample`` writes one PNG per image (or a GIF plus a .npy array (3, F, H, W) in [0, 1] per video) and an
``index.json`` listing each file with its prompt and seed. ``evaluate`` scores a checkpoint (sampling
the held-out prompts deterministically with fixed seeds) or an already written folder, and prints the
mean of every reward with its 95 % confidence interval (1.96 standard errors over samples).
Without --checkpoint the preset's base model is used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .config import preset
from .policy import ModelNotAvailable, load_policy
from .rewards import build_rewards, reward, shapesworld_objectives
from .sample import sample
from .seeds import Stream, sample_seed  # the trainer's evaluation seeds, so the numbers agree
from .train import read_prompts


def load(preset_name: str, ckpt: str | None = None, model: str | None = None):
    """(config, policy) of a preset's base model (or of another base model folder `model`), or of a trained
    checkpoint (a run or checkpoint folder; then its own config decides what runs)."""
    if ckpt and model:
        raise ValueError("give a base model folder or a trained checkpoint, not both")
    cfg = preset(preset_name)
    cfg.model = model or cfg.model
    if ckpt:
        from .config import Config

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


@torch.no_grad()
def generate(cfg, policy, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """Deterministic (ODE) samples, one per (prompt, seed): pixels in [0, 1] on the CPU."""
    ro = sample(policy, prompts, sigmas=policy.sigmas(cfg.eval_num_steps, cfg.height, cfg.width),
                trained=torch.empty(0, dtype=torch.long), seeds=seeds, guidance_scale=cfg.guidance_scale,
                latent_shape=policy.latent_shape(cfg.height, cfg.width, cfg.frames or None),
                batch_size=cfg.rollout_batch_size)
    return ro.pixels.cpu()


def summarize(scores: dict[str, torch.Tensor]) -> dict[str, dict]:
    """{reward: {mean, ci95, n}}; ci95 = 1.96 sample std / sqrt(n), non-finite scores left out."""
    out = {}
    for k, v in scores.items():
        v = v[torch.isfinite(v)].double()
        n = len(v)
        sd = float(v.std()) if n > 1 else float("nan")
        out[k] = {"mean": float(v.mean()) if n else float("nan"), "ci95": 1.96 * sd / math.sqrt(n) if n > 1 else float("nan"),
                  "n": n}
    return out


def table(summary: dict[str, dict]) -> str:
    rows = [f"{'reward':<28}{'mean':>10}{'95% CI':>12}{'n':>6}"]
    rows += [f"{k:<28}{v['mean']:>10.4f}{'+-' + format(v['ci95'], '.4f'):>12}{v['n']:>6}" for k, v in summary.items()]
    return "\n".join(rows)


def reward_names(cfg) -> list[str]:
    """The preset's rewards, plus every ShapesWorld objective of its level for ShapesWorld presets."""
    return list(dict.fromkeys([*cfg.rewards, *shapesworld_objectives(cfg.rewards, cfg.frames > 0)]))


def write_samples(pixels: torch.Tensor, prompts: list[str], seeds: list[int], out: Path) -> Path:
    """PNG per image, GIF + .npy per video, and index.json [{file, prompt, seed}]."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i, (px, prompt, seed) in enumerate(zip(pixels, prompts, seeds)):
        frames = (px.unsqueeze(1) if px.ndim == 3 else px).permute(1, 2, 3, 0)   # (F, H, W, 3)
        ims = [Image.fromarray((f.numpy() * 255).round().astype(np.uint8)) for f in frames]
        if px.ndim == 3:
            name = f"{i:05d}.png"
            ims[0].save(out / name)
        else:
            name = f"{i:05d}.gif"
            ims[0].save(out / name, save_all=True, append_images=ims[1:], duration=125, loop=0)
            np.save(out / f"{i:05d}.npy", px.numpy())
        index.append({"file": name, "prompt": prompt, "seed": seed})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return out / "index.json"


def read_samples(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """Pixels and prompts of a folder written by write_samples (videos from their .npy arrays)."""
    from PIL import Image

    if not (folder / "index.json").is_file():
        raise FileNotFoundError(f"{folder / 'index.json'} not found: give a folder written by python -m otca_lib.sample")
    index = json.loads((folder / "index.json").read_text())
    pix = []
    for row in index:
        f = folder / row["file"]
        if f.suffix == ".gif":
            pix.append(torch.from_numpy(np.load(f.with_suffix(".npy"))).float())
        else:
            pix.append(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255)
    return torch.stack(pix), [row["prompt"] for row in index]


USER_ERRORS = (ValueError, FileNotFoundError, checkpoint.CheckpointError, ModelNotAvailable)


def cli(main):
    """Run a command's main: a user error (bad preset, missing file or checkpoint, unloadable model) is one
    line `error: ...` on stderr and exit code 2, not a traceback."""
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    wrapped.__doc__ = main.__doc__
    return wrapped


@cli
def sample_main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.sample", description="Write samples of a prompt file.")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--prompts", required=True, help="prompt file, one prompt per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", help="a training run or checkpoint folder (default: the base model)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg, policy = load(a.preset, a.checkpoint)
    prompts = read_prompts(a.prompts)
    seeds = [sample_seed(a.seed, Stream.EVAL, i) for i in range(len(prompts))]
    print(f"wrote {write_samples(generate(cfg, policy, prompts, seeds), prompts, seeds, Path(a.out))}")
    return 0


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", required=True, help="which model family / rewards (and base model)")
    ap.add_argument("--checkpoint", help="a training run or checkpoint folder to sample and score")
    ap.add_argument("--folder", help="score an existing folder written by python -m otca_lib.sample instead")
    ap.add_argument("--prompts", help="prompt file (default: the preset's held-out test prompts)")
    ap.add_argument("--samples-per-prompt", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args(argv)
    if a.samples_per_prompt < 1:
        ap.error(f"--samples-per-prompt {a.samples_per_prompt}: give at least 1")
    if a.folder and a.checkpoint:
        ap.error("give --checkpoint (sample and score) or --folder (score written samples), not both")
    if a.folder:
        cfg = preset(a.preset)
        pixels, prompts = read_samples(Path(a.folder))
    else:
        cfg, policy = load(a.preset, a.checkpoint)
        base = read_prompts(a.prompts or cfg.test_prompts)
        prompts = [p for p in base for _ in range(a.samples_per_prompt)]
        pixels = generate(cfg, policy, prompts, [sample_seed(a.seed, Stream.EVAL, i) for i in range(len(prompts))])
    scores = reward(build_rewards(reward_names(cfg)), pixels, prompts)
    summary = summarize(scores)
    print(table(summary))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    bad = {k: len(prompts) - v["n"] for k, v in summary.items() if v["n"] < len(prompts)}
    if bad:  # a NaN checkpoint, or a failing reward model: never a quiet "nan" with exit code 0
        print("error: non-finite scores (left out of the means above): "
              + ", ".join(f"{k} {n} of {len(prompts)}" for k, n in bad.items())
              + "; check the checkpoint's weights and the reward models", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
