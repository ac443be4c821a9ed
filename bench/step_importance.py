"""Which denoising steps decide which objective? Re-noise at step k, finish deterministically, measure the spread.

    python bench/step_importance.py --preset shapesworld-video [--trajectories 8] [--repeats 8] [--seed 0]
    python bench/step_importance.py --preset shapesworld2-image   (level 2; shapesworld-image is level 1)
    python bench/step_importance.py --preset shapesworld2-image --json results/study-image/step_importance.json

With --json the table is also written as JSON (sigmas, objectives, spread, decided), which the study report
(python -m otca_lib.report --step-importance FILE) shows beside the step credit each method gave.
For each of `trajectories` held-out prompts (a seeded random subset), one SDE trajectory x_0 .. x_T of the preset (its steps and
noise level) is sampled. Then for every step k < T - 1, `repeats` continuations take step k again with
fresh SDE noise and finish with ODE steps; the std of each objective over the repeats measures how
much is still undecided at step k (spread(k) is non-increasing in k if later steps only refine). The
table prints, per objective, spread(k) - spread(k + 1) as a share of spread(0): how much of the
objective's outcome step k decides (the last trained step's row holds spread(T - 2) itself). This is
notebook 02's measurement, for any ShapesWorld preset, as a script.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from otca_lib.commands import command, load, model_options
from otca_lib.rewards import build_rewards, reward, shapesworld_objectives
from otca_lib.sample import sde_rollout
from otca_lib.sde import ode_step
from otca_lib.seeds import Stream, generator
from otca_lib.prompts import read_prompts


def finish_from(policy, x, k, sigmas, cond, sde, gen: torch.Generator) -> torch.Tensor:
    """From states x [N, ...] at step k: one fresh stochastic step, then ODE to the end; -> final states."""
    for t in range(k, len(sigmas) - 1):
        v = policy.velocity(x, sigmas[t].expand(x.shape[0]), cond)
        if t == k:
            x = sde.step(x, v, sigmas[t], sigmas[t + 1], noise=torch.randn(x.shape, generator=gen).to(x.device)).x_next
        else:
            x = ode_step(x, v, sigmas[t], sigmas[t + 1]).x_next
    return x


@command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_options(ap, ["shapesworld-image", "shapesworld2-image", "shapesworld-video"], "shapesworld-video")
    ap.add_argument("--trajectories", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the table to this JSON file")
    a = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    cfg, policy = load(a.preset, a.checkpoint, a.model)
    video = cfg.is_video
    test = read_prompts(cfg.test_prompts)
    order = torch.randperm(len(test), generator=generator(a.seed, Stream.SUBSET))   # a seeded random subset
    prompts = [test[i] for i in order[: a.trajectories].tolist()]
    sigmas = policy.sigmas(cfg.num_steps, cfg.height, cfg.width)
    T = cfg.num_steps
    ro = sde_rollout(policy, cfg, prompts, a.seed)
    names = [n for n in shapesworld_objectives(cfg.rewards, video) if not n.endswith("_alignment")]
    fns = build_rewards(names)
    R, P = a.repeats, len(prompts)
    batch = [p for p in prompts for _ in range(R)]
    cond = policy.encode_prompts(batch)
    spread = torch.zeros(T - 1, len(names))                    # [k, objective]: mean over prompts of the std over repeats
    for k in range(T - 1):
        x = ro.states[:, k].repeat_interleave(R, 0)
        final = finish_from(policy, x, k, sigmas.to(x.device), cond, ro.spec.sde, generator(a.seed, Stream.RENOISE, k))
        r = reward(fns, policy.decode(final), batch)
        for j, n in enumerate(names):
            spread[k, j] = r[n].view(P, R).std(1).mean()
    decided = torch.cat([spread[:-1] - spread[1:], spread[-1:]]) / spread[:1].clamp_min(1e-8)
    print(f"{a.preset}: {P} held-out prompts x {R} repeats, {T} steps ({cfg.sde}, noise {cfg.noise_level}), seed {a.seed}")
    base = reward(fns, ro.pixels, prompts)
    print("mean rewards of the trajectories: " + ", ".join(f"{n.split('_', 1)[1]} {float(base[n].mean()):.2f}" for n in names))
    print("\nspread (std over repeats, mean over prompts) when re-noised at step k")
    print(f"{'k':>2} {'sigma':>6} " + " ".join(f"{n.split('_', 1)[1]:>11}" for n in names))
    for k in range(T - 1):
        print(f"{k:>2} {float(sigmas[k]):>6.3f} " + " ".join(f"{float(v):>11.3f}" for v in spread[k]))
    print("\nshare of the outcome decided at step k: (spread(k) - spread(k+1)) / spread(0)")
    for k in range(T - 1):
        print(f"{k:>2} {float(sigmas[k]):>6.3f} " + " ".join(f"{float(v):>11.2f}" for v in decided[k]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({
            "command": "python bench/step_importance.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "preset": a.preset, "model": a.model or cfg.model, "checkpoint": a.checkpoint, "seed": a.seed,
            "trajectories": P, "repeats": R, "steps": list(range(T - 1)), "sigmas": [float(sigmas[k]) for k in range(T - 1)],
            "objectives": [n.split("_", 1)[1] for n in names], "spread": spread.tolist(), "decided": decided.tolist(),
        }, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
