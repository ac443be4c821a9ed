"""Evaluation from the command line: a preset's model (base or trained), or written samples, scored.

    python -m otca_lib.evaluate --preset shapesworld2-image [--checkpoint DIR | --folder DIR] [--prompts FILE]
                                [--samples-per-prompt N] [--steps N] [--json FILE]

It scores a checkpoint (sampling the held-out prompts deterministically with fixed seeds) or a folder written
by ``python -m otca_lib.sample``, and prints the mean of every reward with its 95 % confidence interval (1.96
standard errors over samples). Without --checkpoint the preset's base model is used. --steps samples with another
number of ODE steps than the config's ``eval_num_steps`` (the trainer's held-out evaluation), e.g. 40 as Flow-GRPO
evaluates SD3.5; the seeds stay the same, so only the step count differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

from .commands import command, load
from .config import preset
from .media import read_samples
from .prompts import read_prompts
from .rewards import build_rewards, reward, shapesworld_objectives
from .sample import generate
from .seeds import Stream, sample_seed  # the trainer's evaluation seeds, so the numbers agree


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
    return list(dict.fromkeys([*cfg.rewards, *shapesworld_objectives(cfg.rewards, cfg.is_video)]))


@command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", required=True, help="which model family / rewards (and base model)")
    ap.add_argument("--checkpoint", help="a training run or checkpoint folder to sample and score")
    ap.add_argument("--folder", help="score an existing folder written by python -m otca_lib.sample instead")
    ap.add_argument("--prompts", help="prompt file (default: the preset's held-out test prompts)")
    ap.add_argument("--samples-per-prompt", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="ODE sampling steps (default: the config's eval_num_steps)")
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args(argv)
    if a.samples_per_prompt < 1:
        ap.error(f"--samples-per-prompt {a.samples_per_prompt}: give at least 1")
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps {a.steps}: give at least 1 sampling step")
    if a.folder and a.steps is not None:
        ap.error("--steps sets how samples are drawn; --folder scores samples already drawn: give one of them")
    if a.folder and a.checkpoint:
        ap.error("give --checkpoint (sample and score) or --folder (score written samples), not both")
    if a.folder:
        cfg = preset(a.preset)
        pixels, prompts = read_samples(Path(a.folder))
    else:
        cfg, policy = load(a.preset, a.checkpoint)
        if a.steps is not None:
            cfg = dataclasses.replace(cfg, eval_num_steps=a.steps)
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
