"""Gradient-level multi-objective balancing: per-objective policy gradients combined by MGDA's min-norm.

The credit method ``gradient_mgda`` gives every objective k its own group advantage A_k (unweighted: the
balancing replaces the weights), the update computes one policy gradient per objective, g_k (the gradient of the
clipped surrogate with advantages A_k, all-reduced over processes), and steps along

    g_hat_k = g_k / ||g_k||                                       unit per-objective gradients
    c       = argmin_{c in simplex, c_k >= floor} || sum_k c_k g_hat_k ||^2      (MGDA's min-norm point)
    d       = (sum_k c_k g_hat_k) * mean_k ||g_k||                the update direction, as a gradient

Source: MGDA (Desideri 2012; Sener & Koltun 2018) as used for diffusion RL by MARBLE (Zhao et al. 2026, arXiv
2605.06507: separate per-reward advantages and policy gradients, harmonised by a quadratic program over the
normalised gradients). Not reproduced from MARBLE: its amortised DiffusionNFT formulation and the EMA of the
coefficients; here every optimizer step costs one backward pass per objective (docs/credit.md, Cost).

The min-norm direction has a non-negative inner product with every g_hat_k (when the floor is 0), so to first
order no objective gets worse; the floor keeps every objective in the update. Shapes: R objectives; G [R, R].
"""

from __future__ import annotations

import torch


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of v [R] onto the probability simplex (sort-based, exact)."""
    u = v.sort(descending=True).values
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


def min_norm_weights(G: torch.Tensor, floor: float = 0.0, iterations: int = 2000) -> torch.Tensor:
    """argmin_c c^T G c over {c : sum c = 1, c_k >= floor}. G [R, R] a Gram matrix (positive semi-definite); floor
    in [0, 1/R]. -> c [R] (float64).

    With c = floor + (1 - R floor) lam, lam on the simplex, this is projected gradient descent on lam with the step
    1 / L (L = 2 (1 - R floor)^2 times G's largest eigenvalue, the gradient's Lipschitz constant); R is the number
    of objectives, a handful, so thousands of steps cost nothing beside one backward pass.
    """
    G = G.double()
    R = G.shape[0]
    if not 0 <= floor <= 1 / R:
        raise ValueError(f"the floor must be in [0, 1/R] = [0, {1 / R:.3f}], got {floor}")
    scale = 1 - R * floor
    lipschitz = 2 * scale**2 * float(torch.linalg.eigvalsh(G).max())
    lam = torch.full((R,), 1.0 / R, dtype=G.dtype)
    if lipschitz > 0:
        for _ in range(iterations):
            grad = 2 * scale * (G @ (floor + scale * lam))
            lam = project_to_simplex(lam - grad / lipschitz)
    return floor + scale * lam


def combine(grads: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Combine per-objective gradients grads [R, D] (objective k's gradient of every trained weight, flattened and
    all-reduced). -> (the direction d [D], c [R], diagnostics: every objective's cosine with d, the gradient norms)."""
    flat = grads.double()
    norms = flat.norm(dim=1)
    unit = flat / norms.clamp_min(1e-30)[:, None]
    c = min_norm_weights(unit @ unit.T, floor)
    d = (c[:, None] * unit).sum(0) * norms.mean()
    return d.to(grads.dtype), c, {"cosines": cosines(flat, d), "norms": norms}


def cosines(grads: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """cos(g_k, d) for every row g_k of grads [R, D] and a direction d [D] (0 where either is 0). -> [R] float64."""
    g, d = grads.double(), d.double()
    return (g @ d) / (g.norm(dim=1) * d.norm()).clamp_min(1e-30)
