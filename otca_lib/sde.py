"""One denoising step of a flow-matching sampler, as a Gaussian policy with an exact log-probability.

Notation (the diffusers / SD3 / FLUX / Wan convention, docs/algorithm.md section 1):

    x_s   = (1 - s) x0 + s e          noise level s in [0, 1], s = 1 is pure noise, e ~ N(0, I)
    v     = e - x0                    what the transformer predicts (velocity)
    x0_hat = x - s v                  predicted clean sample
    x1_hat = x + (1 - s) v            predicted noise
    dt    = s' - s < 0                one step goes from s to the next, smaller s'

Every step function maps (x, v, s, s') to a Gaussian N(mean, std^2 I) over the next state and either
draws from it (``noise`` given) or scores a state that was already drawn (``x_next`` given, used
when log-probs are recomputed under new weights). It returns a :class:`Step`.

Shapes: ``x`` and ``v`` are (B, C, H, W) for images or (B, C, F, H, W) for videos; ``s`` and ``s'``
are floats or tensors of shape [B]; ``log_prob`` is [B].

Numerical care: everything is computed in float32 whatever the model dtype (bf16 log-probs of
near-identical Gaussians lose the ratio exp(logp_new - logp_old) to rounding), and the log-density
is *averaged* over the non-batch dimensions instead of summed, so that it does not scale with the
resolution and ratios stay finite (Flow-GRPO's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Step:
    x_next: torch.Tensor    # next state, same shape as x, float32
    log_prob: torch.Tensor  # [B] log N(x_next; mean, std^2 I) averaged over non-batch dims (0 for the ODE)
    mean: torch.Tensor      # same shape as x, float32
    std: torch.Tensor       # broadcastable to x: (B, 1, 1, 1[, 1]); 0 for a deterministic step


def _per_sample(s, x: torch.Tensor) -> torch.Tensor:
    """A float or [B] tensor of noise levels, as float32 of shape (B, 1, ..., 1) to broadcast over x."""
    s = torch.as_tensor(s, dtype=torch.float32, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    return s.reshape(-1, *([1] * (x.ndim - 1)))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I), averaged over all non-batch dims. x, mean (B, ...); std broadcastable. -> [B]."""
    lp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
    return lp.flatten(1).mean(1)


def _draw_or_score(mean, std, noise, x_next) -> Step:
    """Draw x' = mean + std * noise, or score the given x'; exactly one of noise / x_next is given."""
    if (noise is None) == (x_next is None):
        raise ValueError("pass exactly one of noise= (to sample) or x_next= (to score a drawn state)")
    if x_next is None:
        x_next = mean + std * noise.float()
    x_next = x_next.float()
    return Step(x_next, gaussian_log_prob(x_next, mean, std), mean, std)


def ode_step(x, v, s, s_next) -> Step:
    """Euler step of the probability-flow ODE: x' = x + dt v. Deterministic: std 0, log_prob 0.

    Equals diffusers' FlowMatchEulerDiscreteScheduler.step. The untrained steps of a rollout and every step of
    an evaluation sample take it; it is not an :class:`SDE` (it has no noise level and nothing to train).
    """
    x, v = x.float(), v.float()
    dt = _per_sample(s_next, x) - _per_sample(s, x)
    mean = x + dt * v
    zero = torch.zeros(x.shape[0], device=x.device)
    return Step(mean, zero, mean, torch.zeros_like(dt))


def flow_grpo_step(x, v, s, s_next, noise_level: float, noise=None, x_next=None) -> Step:
    """Flow-GRPO's SDE step (Liu et al. 2025, arXiv 2505.05470, eq. 9), same marginals as the ODE.

        sigma_t = a sqrt(s / (1 - s))                   (at s = 1 the denominator uses s')
        mean    = x + dt [v + sigma_t^2 / (2 s) x1_hat]  x1_hat = x + (1 - s) v
        std     = sigma_t sqrt(-dt)

    The drift is the reverse-time SDE dx = [v - g^2/2 grad log p_s(x)] ds with g = sigma_t and the
    score grad log p_s = -x1_hat / s. ``noise_level`` is a (0.7 for SD3.5, 0.9 for FLUX in the
    public recipes); a = 0 gives the ODE step exactly.
    """
    x, v = x.float(), v.float()
    s_, sn = _per_sample(s, x), _per_sample(s_next, x)
    dt = sn - s_
    # At s = 1, s / (1 - s) is infinite; Flow-GRPO substitutes the next level in the denominator.
    denom = 1 - torch.where(s_ >= 1, sn, s_)
    sigma_t = noise_level * torch.sqrt(s_ / denom)
    x1_hat = x + (1 - s_) * v
    mean = x + dt * (v + sigma_t**2 / (2 * s_) * x1_hat)
    std = sigma_t * torch.sqrt(-dt)
    return _draw_or_score(mean, std, noise, x_next)


def dance_step(x, v, s, s_next, noise_level: float, noise=None, x_next=None) -> Step:
    """DanceGRPO's SDE step (Xue et al. 2025, arXiv 2505.07818): constant diffusion g = eta = noise_level.

        score = -(x - (1 - s) x0_hat) / s^2             x0_hat = x - s v
        mean  = x + dt [v - eta^2 / 2 * score]
        std   = eta sqrt(-dt)

    Same reverse-SDE drift as :func:`flow_grpo_step` with a noise scale that does not depend on s.
    """
    x, v = x.float(), v.float()
    s_, sn = _per_sample(s, x), _per_sample(s_next, x)
    dt = sn - s_
    x0_hat = x - s_ * v
    score = -(x - (1 - s_) * x0_hat) / s_**2
    eta = noise_level
    mean = x + dt * (v - eta**2 / 2 * score)
    std = torch.full_like(dt, eta) * torch.sqrt(-dt)
    return _draw_or_score(mean, std, noise, x_next)


def cps_step(x, v, s, s_next, noise_level: float, noise=None, x_next=None) -> Step:
    """Coefficient-Preserving Sampling (Wang & Yu 2025, arXiv 2509.05952).

        std  = s' sin(a pi / 2)
        mean = (1 - s') x0_hat + sqrt(s'^2 - std^2) x1_hat
        x'   = mean + std e

    The coefficients of x0 and of the (total) noise in x' are exactly (1 - s') and s', so no excess
    noise accumulates. At s' = 0 the step is deterministic (std = 0): do not train the last step.
    It is not marginal-preserving for a > 0: it re-noises by O(1) around the posterior mean, which
    shrinks the sample variance (on Gaussian data, a = 0.7 gives a std 16 % too small; a = 0.1 is
    within 2 %; tests/test_sde.py measures both).
    """
    x, v = x.float(), v.float()
    s_, sn = _per_sample(s, x), _per_sample(s_next, x)
    x0_hat, x1_hat = x - s_ * v, x + (1 - s_) * v
    std = sn * math.sin(noise_level * math.pi / 2)
    mean = (1 - sn) * x0_hat + torch.sqrt(sn**2 - std**2) * x1_hat
    return _draw_or_score(mean, std, noise, x_next)


SDEKind = Literal["flow_grpo", "dance", "cps"]
SDE_STEPS = {"flow_grpo": flow_grpo_step, "dance": dance_step, "cps": cps_step}  # the keys are get_args(SDEKind)


@dataclass(frozen=True)
class SDE:
    """The stochastic step of a run, built once from the config (``SDE(cfg.sde, cfg.noise_level)``): the rollout
    draws its trained steps with it and the update scores the same transitions with it, so the two cannot
    disagree on the kind or the noise level.

    ``sde.step(x, v, s, s_next, noise=...)`` draws x' (sampling); ``sde.step(..., x_next=...)`` scores a drawn x'
    under new weights (the update's recomputation). Shapes as in the step functions above.
    """
    kind: SDEKind
    noise_level: float   # a for flow_grpo and cps, eta for dance

    def __post_init__(self):
        if self.kind not in SDE_STEPS:
            raise ValueError(f"unknown SDE {self.kind!r}; choose one of {list(SDE_STEPS)} (the ODE is ode_step)")

    def step(self, x, v, s, s_next, *, noise=None, x_next=None) -> Step:
        return SDE_STEPS[self.kind](x, v, s, s_next, self.noise_level, noise=noise, x_next=x_next)


def kl_in_mean_space(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between the policy's and the reference's step Gaussians of equal std, per sample [B].

        KL = mean_dims (mean - mean_ref)^2 / (2 std^2)

    (Flow-GRPO's KL term; averaged over dims like the log-prob.) Shapes as in the step functions.
    """
    return (((mean.float() - mean_ref.float()) ** 2) / (2 * std**2)).flatten(1).mean(1)
