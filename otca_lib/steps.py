"""Which denoising steps of a rollout are stochastic and trained: one rule, built once from the config.

A rollout has T steps, t = 0 .. T-1. The last step is always an ODE step: the sample that is decoded and
rewarded then carries no injected noise (and CPS's last step has std 0). Among the T - 1 others, the rule
picks the K steps that use the SDE and are trained in this iteration; the rest use the ODE.

    'all'     every step but the last: K = T - 1 (Flow-GRPO)
    'random'  a fresh random subset of K = max(1, round(fraction (T - 1))) steps each iteration, the same for
              every sample and process (DanceGRPO's timestep fraction)
    'window'  K = min(window_size, T - 1) consecutive steps, sliding by one every window_shift_every
              iterations and wrapping around (MixGRPO's sliding window)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from .seeds import Stream, generator

TrainStepRule = Literal["all", "random", "window"]
TRAIN_STEP_RULES = get_args(TrainStepRule)


@dataclass(frozen=True)
class TrainedSteps:
    rule: TrainStepRule
    num_steps: int                 # T, the steps of a rollout
    fraction: float = 0.6          # 'random': share of the T - 1 candidate steps
    window_size: int = 4           # 'window': its length
    window_shift_every: int = 25   # 'window': iterations between one-step shifts
    seed: int = 0                  # 'random': the run seed (stream TRAINED_STEPS)

    def __post_init__(self):
        if self.rule not in TRAIN_STEP_RULES:
            raise ValueError(f"unknown train_steps rule {self.rule!r}; use one of {TRAIN_STEP_RULES}")

    @classmethod
    def from_config(cls, cfg) -> "TrainedSteps":
        return cls(cfg.train_steps, cfg.num_steps, cfg.train_fraction, cfg.window_size, cfg.window_shift_every, cfg.seed)

    @property
    def count(self) -> int:
        """K, the trained steps per rollout (the same in every iteration)."""
        n = self.num_steps - 1
        if self.rule == "all":
            return n
        if self.rule == "random":
            return max(1, round(self.fraction * n))
        return min(self.window_size, n)

    def at(self, iteration: int) -> torch.Tensor:
        """Sorted indices [K] (long) of the steps trained in this iteration, among 0 .. T-2."""
        n, k = self.num_steps - 1, self.count
        if self.rule == "all":
            return torch.arange(n)
        if self.rule == "random":
            return torch.randperm(n, generator=generator(self.seed, Stream.TRAINED_STEPS, iteration))[:k].sort().values
        start = (iteration // self.window_shift_every) % (n - k + 1)
        return torch.arange(start, start + k)
