"""Group statistics: GRPO's group-relative advantage of one reward, the building block of every credit method
(credit.py, where phase 3 of an iteration, sample -> reward -> advantage -> update, happens).

GRPO (Shao et al. 2024; Flow-GRPO, DanceGRPO for generators, docs/algorithm.md section 2) samples a group
of G trajectories per prompt and scores each against its own group:

    A_i = clip( (r_i - mean_{j in g(i)} r_j) / (std + eps), -A_max, A_max )

with std either the group's own standard deviation (``global_std=False``) or the standard deviation
of all (prompt-mean-centred) rewards of the batch (``global_std=True``, Flow-GRPO's ``global_std``).

These functions work on the *global* batch: every process gathers all rewards first (a prompt's group
may span processes), computes the same advantages, and keeps its own slice. A non-finite reward
(NaN / inf from a failing reward model) excludes that sample from its group's statistics and gives it
advantage 0, so it never reaches the parameters.

Shapes: rewards [N] float, group ids [N] long (samples with equal id share a prompt).
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group: torch.Tensor, *, global_std: bool = False,
                     eps: float = 1e-4, clip: float = 5.0) -> torch.Tensor:
    """Per-prompt standardised rewards -> advantages [N] (float32). See the module docstring.

    The std is the population std (divide by n, not n - 1): with G = 2 the two advantages are then
    exactly +-1. eps keeps a group of equal rewards at advantage 0 instead of 0 / 0. Groups with a
    single valid sample get advantage 0 (nothing to compare against). The statistics are computed in
    float64: in float32 the squared deviations of rewards above about 1e19 overflow to inf and every
    advantage of the group silently becomes 0.
    """
    r = rewards.double()
    valid = torch.isfinite(r)
    r0 = torch.where(valid, r, torch.zeros_like(r))
    _, g = torch.unique(group, return_inverse=True)           # group ids -> 0..P-1
    P = int(g.max()) + 1 if g.numel() else 0
    zeros = torch.zeros(P, dtype=r.dtype, device=r.device)
    count = zeros.clone().index_add_(0, g, valid.to(r.dtype))
    mean = zeros.clone().index_add_(0, g, r0) / count.clamp_min(1)
    centred = torch.where(valid, r0 - mean[g], torch.zeros_like(r0))
    if global_std:
        std = (centred[valid] ** 2).mean().sqrt() if valid.any() else torch.zeros((), dtype=r.dtype, device=r.device)
        std = std.expand_as(r)
    else:
        var = zeros.clone().index_add_(0, g, centred**2) / count.clamp_min(1)
        std = var.sqrt()[g]
    adv = (centred / (std + eps)).clamp(-clip, clip)
    return torch.where(valid & (count[g] > 1), adv, torch.zeros_like(adv)).float()


def group_reward_stats(rewards: torch.Tensor, group: torch.Tensor) -> dict[str, float]:
    """Diagnostics of the gathered rewards: mean within-group std (how much a group disagrees, the
    signal GRPO learns from) and the fraction of groups whose rewards are all equal (no signal)."""
    r = rewards.float()
    stds, flat = [], 0
    for gid in torch.unique(group):  # P groups, not samples: a handful per iteration
        rg = r[(group == gid) & torch.isfinite(r)]
        if rg.numel() > 1:
            stds.append(rg.std(unbiased=False))
            flat += int(rg.max() == rg.min())
    n = max(len(stds), 1)
    return {"std_in_group": float(torch.stack(stds).mean()) if stds else 0.0, "flat_groups": flat / n}
