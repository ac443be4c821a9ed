"""Credit assignment (phase 3 of an iteration: sample -> reward -> advantage -> update).

A credit method turns the per-objective rewards of the global batch into one advantage per
(local sample, trained step): a [B, K] tensor that the update multiplies into the clipped
surrogate. Every method has the same signature, ``method(inp: CreditInput) -> (advantages [B, K],
diagnostics dict)``, and is selected by name through ``CREDIT_METHODS`` (config field ``credit``,
``--credit NAME`` on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .advantage import group_advantages


@dataclass
class CreditInput:
    rewards: dict             # {objective: [N] float} rewards of the *global* batch (gathered over processes)
    weights: dict             # {objective: float} the configured weight of each objective
    group: torch.Tensor       # [N] long, prompt group of each global sample
    local: slice              # this process's samples within the global batch (B = local length)
    rollout: object           # this process's sample.Rollout (states, x0_hat, sigmas, log_probs, trained)
    global_std: bool = False  # advantage normalisation, see advantage.group_advantages
    eps: float = 1e-4
    clip: float = 5.0


def grpo(inp: CreditInput) -> tuple[torch.Tensor, dict]:
    """Uniform GRPO on the weighted sum of raw rewards (Flow-GRPO, DanceGRPO image):

        r_i = sum_k w_k r_{k,i};   A_i = group_advantage(r)_i;   A_{i,t} = A_i for every trained t.
    """
    total = sum(w * inp.rewards[k].float() for k, w in inp.weights.items())
    adv = group_advantages(total, inp.group, global_std=inp.global_std, eps=inp.eps, clip=inp.clip)
    K = len(inp.rollout.trained)
    return adv[inp.local].unsqueeze(1).expand(-1, K).contiguous(), {}


CREDIT_METHODS = {"grpo": grpo}


def advantage(method: str, inp: CreditInput) -> tuple[torch.Tensor, dict]:
    """Phase 3: the advantages [B, K] of this process's samples and the method's diagnostics."""
    if method not in CREDIT_METHODS:
        raise ValueError(f"unknown credit method {method!r}; choose one of {sorted(CREDIT_METHODS)}")
    return CREDIT_METHODS[method](inp)
