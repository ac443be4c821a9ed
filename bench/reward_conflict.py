"""How strongly do the ShapesWorld objectives conflict on the base model's own GRPO groups?

    python bench/reward_conflict.py --preset shapesworld2-image [--prompts 24] [--group 8] [--seed 0]
    python bench/reward_conflict.py --preset shapesworld-video

Samples groups exactly as training does (SDE rollouts of the preset, `group` samples per training
prompt), scores every objective of the preset plus the ShapesWorld parts, and prints:

- the within-group standard deviation of every reward (GRPO learns nothing about an objective whose
  samples all score the same within a group);
- the within-group Pearson correlation of each pair of objectives: per group, the correlation of the
  two rewards over its samples, averaged over the groups where both vary (advantages only see
  within-group differences, so this is the conflict GRPO feels; negative = conflict);
- the fraction of samples whose per-objective advantages (of the preset's rewards) have mixed signs:
  the samples where improving one objective means worsening another, and where MOCA's min-norm
  combination cancels (lambda = 0).
"""
import argparse
import itertools
import sys

import torch

from otca_lib.groups import group_advantages
from otca_lib.commands import command, load, model_options
from otca_lib.rewards import alignment_parts, build_rewards, reward, shapesworld_objectives
from otca_lib.sample import sde_rollout
from otca_lib.prompts import read_prompts


def within_group_correlation(a: torch.Tensor, b: torch.Tensor, group: torch.Tensor) -> tuple[float, int]:
    """Mean over groups of corr(a, b) within the group, over the groups where both vary; -> (mean, #groups)."""
    rs = []
    for g in group.unique():
        x, y = a[group == g], b[group == g]
        if x.std() > 1e-6 and y.std() > 1e-6:
            rs.append(float(torch.corrcoef(torch.stack([x, y]))[0, 1]))
    return (sum(rs) / len(rs) if rs else float("nan")), len(rs)


def variance_shares(r: dict, weights: dict, group: torch.Tensor, video: bool = False) -> dict[str, float]:
    """Split the within-group variance of the weighted total T = sum_k w_k r_k into additive parts c_p:
    share_p = sum_g cov_g(c_p, T) / sum_g var_g(T) (the shares sum to 1; a negative share pulls against T).
    The parts are the weighted rewards, with a ShapesWorld alignment reward replaced by the n attribute scores
    whose mean it is (rewards.alignment_parts; checked against r), each weighted w / n: how much of GRPO's
    advantage comes from each attribute."""
    parts = {k: w * r[k] for k, w in weights.items()}
    for k, w in weights.items():
        attrs = alignment_parts(k, video)
        if attrs and all(a in r for a in attrs):
            if not torch.allclose(torch.stack([r[a] for a in attrs]).mean(0), r[k], atol=1e-4):
                raise ValueError(f"{k} is not the mean of {attrs} on these samples")
            del parts[k]
            parts.update({a: w / len(attrs) * r[a] for a in attrs})
    total = sum(parts.values())
    _, index = group.unique(return_inverse=True)
    counts = torch.bincount(index).to(total.dtype)

    def centred(x):  # x minus its group's mean
        return x - (torch.zeros(len(counts), dtype=x.dtype).index_add_(0, index, x) / counts)[index]

    t = centred(total)
    return {name: float((centred(c) * t).sum() / (t * t).sum()) for name, c in parts.items()}


@command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_options(ap, ["shapesworld-image", "shapesworld2-image", "shapesworld-video"], "shapesworld2-image")
    ap.add_argument("--prompts", type=int, default=24, help="training prompts (groups), every k-th of the file")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    cfg, policy = load(a.preset, a.checkpoint, a.model)
    video = cfg.is_video
    train = read_prompts(cfg.train_prompts)
    prompts = train[:: max(1, len(train) // a.prompts)][: a.prompts]
    batch = [p for p in prompts for _ in range(a.group)]
    group = torch.arange(len(prompts)).repeat_interleave(a.group)
    ro = sde_rollout(policy, cfg, batch, a.seed)
    names = list(dict.fromkeys([*cfg.rewards, *shapesworld_objectives(cfg.rewards, video)]))
    r = reward(build_rewards(names), ro.pixels, batch)
    print(f"{a.preset}: {len(prompts)} training prompts x group {a.group}, SDE ({cfg.sde}, noise {cfg.noise_level}), "
          f"{cfg.num_steps} steps, seed {a.seed}")
    print("\nmean reward: " + ", ".join(f"{k} {float(v.mean()):.3f}" for k, v in r.items()))
    # what GRPO can learn from: an objective that does not vary within a group gives no advantage
    spread = {k: float(torch.stack([v[group == g].std() for g in group.unique()]).mean()) for k, v in r.items()}
    print("within-group std (mean over groups): " + ", ".join(f"{k} {v:.3f}" for k, v in spread.items()))
    print("\nwithin-group correlation (mean over groups where both vary; negative = conflict)")
    print(f"{'objective':>16} {'objective':>16} {'corr':>7} {'groups':>7}")
    for x, y in itertools.combinations(cfg.rewards, 2):
        c, n = within_group_correlation(r[x], r[y], group)
        print(f"{x:>16} {y:>16} {c:>7.3f} {n:>7}")
    print("\nshare of the weighted total's within-group variance (what GRPO's advantage follows), by part:")
    for name, share in variance_shares(r, cfg.rewards, group, video).items():
        print(f"{name:>16} {share:7.3f}")
    A = torch.stack([group_advantages(r[k], group) for k in cfg.rewards], 1)     # [B, R]
    nonzero = A.abs() > 1e-6
    mixed = ((A > 1e-6).any(1) & (A < -1e-6).any(1))
    print(f"\nsamples with mixed-sign advantages over {list(cfg.rewards)}: {float(mixed.float().mean()):.3f} "
          f"(of those with any non-zero advantage: {float(mixed.sum() / nonzero.any(1).sum().clamp(min=1)):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
