"""Exponential moving average of trained weights: what the trainer evaluates and checkpoints (``ema_decay``),
and what the ShapesWorld pretraining evaluates and ships.

    ema <- d ema + (1 - d) theta        after every optimizer step, d the decay

The average is kept in float32 whatever the weights' dtype (bf16 would round small updates away).
"""

from __future__ import annotations

import contextlib

import torch


def warmup_decay(decay: float, step: int) -> float:
    """min(decay, (1 + step) / (10 + step)): early on the average covers about the last tenth of the steps taken.
    Pretraining from scratch needs it: a fixed 0.999 from step 0 averaged weights from far apart in early
    training, and its samples went from one big blob to near-blank canvases before recovering (data/README.md)."""
    return min(decay, (1 + step) / (10 + step))


class EMA:
    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone().float() for p in params]   # checkpoint.py saves these as ema.<i>

    @torch.no_grad()
    def step(self, decay: float | None = None) -> None:
        """Move the average towards the current weights, with this step's decay (default: the configured one)."""
        d = self.decay if decay is None else decay
        for e, p in zip(self.shadow, self.params):
            e.lerp_(p.detach().float(), 1 - d)

    @contextlib.contextmanager
    def swapped(self):
        """Temporarily load the averaged weights into the model (to evaluate or copy it); restored on exit."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.shadow):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)
