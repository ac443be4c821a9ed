"""Credit assignment: phase 3 of an iteration (sample -> reward -> advantage -> update), ``advantage(method, inp)``.

A credit method turns the per-objective rewards of the global batch into advantages for this
process's (sample, trained step) pairs: a [B, K] tensor, or [B, K, R] when each of the R objectives
keeps its own clipped loss (``per_reward_loss``; update.py sums the R losses). Every method has the
same signature, ``method(inp: CreditInput) -> (advantages, diagnostics)``, and is chosen by name
(config ``credit``, ``--credit NAME``). docs/algorithm.md sections 2-3 give the sources.

Notation: i a sample, t a denoising step (K trained steps among T), k an objective (R of them) with
configured weight w_k > 0 and prior u_k = w_k / sum w. A_k^i is the group advantage of objective k
(advantage.group_advantages). Step weights average 1 over the trained steps, so the learning rate
keeps its meaning whatever the method.

| name | A_hat[i, t] | source |
|---|---|---|
| grpo | GA(sum_k w_k r_k)^i | Flow-GRPO |
| per_reward | sum_k w_k A_k^i | MixGRPO, Pref-GRPO |
| gdpo | batch-normalised sum_k w_k A_k^i | GDPO |
| per_reward_loss | w_k A_k^i, one clipped loss per objective | DanceGRPO (video) |
| noise_weighted | s_t GA(sum_k w_k r_k)^i, s_t proportional to the step's noise std | TempFlow-GRPO |
| tcd | W_t^i GA(sum_k w_k r_k)^i | OTCA (review), CoCA |
| moca | sum_k c_k^i A_k^i | OTCA (review), MGDA |
| otca | W_t^i sum_k c_k^i A_k^i | OTCA (review) |
| otca_objective | sum_k c_k^i W_{k,t}^i A_k^i | this repository (beyond the paper) |
| gradient_mgda | A_k^i per objective; the update steps along the min-norm combination of the R policy gradients | MGDA, MARBLE (mgda.py) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .groups import group_advantages
from .seeds import Stream, unit_uniform


@dataclass
class CreditInput:
    rewards: dict             # {objective: [N] float} rewards of the *global* batch (gathered over processes)
    group: torch.Tensor       # [N] long, prompt group of each global sample
    local: slice              # this process's samples within the global batch (B = its length)
    rollout: object           # this process's sample.Rollout (states, x0_hat, sigmas, step_std, trained, ...)
    cfg: object               # the Config: reward weights, advantage normalisation, credit knobs
    iteration: int = 0
    score_x0: object = None   # objective-aware only: fn(latents [M, *L], prompts [M]) -> {objective: [M]}
    state: "CreditState" = None  # objective-aware only: the amortised profile, kept across iterations


class CreditState:
    """What a credit method carries across iterations (the amortised objective-aware step profile).
    checkpoint.save writes it (as a tensor) so that a resumed run continues exactly."""

    def __init__(self):
        self.profile: torch.Tensor | None = None  # [R, T], mean over samples of W_{k,t}


# ----------------------------------------------------------------------------- building blocks
def _weights(inp: CreditInput) -> torch.Tensor:
    """[R] configured weights w_k, in the order of inp.rewards."""
    return torch.tensor([float(inp.cfg.rewards[k]) for k in inp.rewards])


def _ga(inp: CreditInput, r: torch.Tensor) -> torch.Tensor:
    c = inp.cfg
    return group_advantages(r, inp.group, global_std=c.global_std, eps=c.adv_eps, clip=c.adv_clip)


def summed_reward_advantage(inp: CreditInput) -> torch.Tensor:
    """[B] GA(sum_k w_k r_k): one advantage from the weighted sum of raw rewards."""
    total = sum(float(inp.cfg.rewards[k]) * r.float() for k, r in inp.rewards.items())
    return _ga(inp, total)[inp.local]


def per_objective_advantages(inp: CreditInput) -> torch.Tensor:
    """[B, R] A_k^i: each objective standardised within its group (non-finite rewards excluded per objective)."""
    return torch.stack([_ga(inp, r)[inp.local] for r in inp.rewards.values()], dim=1)


def _normalise_over_trained(w: torch.Tensor, eps: float, max_gain: float) -> torch.Tensor:
    """(clip(g, 0, max_gain) + eps) / mean over the last dim: non-negative, finite, mean 1."""
    w = w.clamp(min=0) if max_gain <= 0 else w.clamp(0, max_gain)
    w = w + eps
    return w / w.mean(-1, keepdim=True)


def _window_mean(g: torch.Tensor, window: int) -> torch.Tensor:
    """Replace each step's value by the mean over its window of `window` consecutive steps. g [..., T]."""
    if window <= 1:
        return g
    T = g.shape[-1]
    idx = torch.arange(T, device=g.device) // window
    sums = torch.zeros(*g.shape[:-1], int(idx.max()) + 1, device=g.device).index_add_(-1, idx, g)
    counts = torch.bincount(idx).to(g)
    return (sums / counts)[..., idx]


def tcd_weights(rollout, *, space: str = "latent", window: int = 1, max_gain: float = 0.0,
                eps: float = 1e-3) -> torch.Tensor:
    """Trajectory-level credit decomposition: step weights W [B, K] from progress towards the final sample.

        e_t   = states[t] ('latent') or x0_hat[t] ('x0_hat'), t = 0..T-1; e_T = the final sample
        c_t   = cos(vec(e_t), vec(e_T))          similarity of the estimate before step t to the outcome
        g_t   = c_{t+1} - c_t                    the progress made by step t
        W_t   = (clip(g_t, 0, g_max) + eps) / mean_{trained tau}(clip(g_tau, 0, g_max) + eps)

    Source: OTCA's TCD as described by the review (latents) and CoCA (x0_hat); windows average g over
    consecutive steps. A trajectory without positive gains (constant, reversed) gets uniform weights.
    """
    final = rollout.states[:, -1].flatten(1)                                   # [B, D]
    seq = rollout.states if space == "latent" else torch.cat([rollout.x0_hat, rollout.states[:, -1:]], 1)
    cos = F.cosine_similarity(seq.flatten(2), final[:, None], dim=-1)          # [B, T + 1]
    gains = _window_mean(cos[:, 1:] - cos[:, :-1], window)                     # [B, T]
    return _normalise_over_trained(gains[:, rollout.trained], eps, max_gain)


def noise_step_weights(rollout) -> torch.Tensor:
    """[K] weights proportional to each trained step's noise std sigma_t sqrt(-dt), mean 1 (TempFlow-GRPO)."""
    s = rollout.step_std[rollout.trained].float()
    return s / s.mean()


def moca_coefficients(A: torch.Tensor, prior: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-objective credit allocation: per-sample coefficients c [B, R] on the simplex.

        c_mn = argmin_{c in simplex} (sum_k c_k A_k)^2        (MGDA's min-norm, per sample, scalar case)
        c    = (1 - lambda) c_mn + lambda u                   (exploration towards the prior u)

    Closed form of the scalar min-norm problem: if all A_k share a sign, all weight goes to the
    smallest |A_k| (ties split evenly); if signs are mixed, 0 is reachable: the positive and negative
    objectives are each averaged uniformly and mixed so that sum_k c_k A_k = 0 (the min-norm point is
    not unique there; this choice treats the objectives of each side alike). A: [B, R]; prior: [R]
    summing to 1. Returns (c [B, R], cancelled [B] bool: the min-norm combination was exactly 0).
    """
    pos, neg = A > 0, A < 0
    mixed = (pos.any(1) & neg.any(1)) | (A == 0).any(1)
    mag = A.abs()
    smallest = (mag == mag.min(1, keepdim=True).values).float()
    c_same = smallest / smallest.sum(1, keepdim=True)
    # mixed signs: alpha mean_P + (1 - alpha) mean_N = 0 with uniform weights within each side
    n_pos, n_neg = pos.sum(1, keepdim=True).clamp_min(1), neg.sum(1, keepdim=True).clamp_min(1)
    mean_pos = (A * pos).sum(1, keepdim=True) / n_pos
    mean_neg = (A * neg).sum(1, keepdim=True) / n_neg
    alpha = -mean_neg / (mean_pos - mean_neg).clamp_min(1e-12)
    c_mixed = alpha * pos / n_pos + (1 - alpha) * neg / n_neg
    zero = (A == 0).float()  # an objective at exactly 0 already is the min-norm point
    c_mixed = torch.where((A == 0).any(1, keepdim=True), zero / zero.sum(1, keepdim=True).clamp_min(1), c_mixed)
    c_mn = torch.where(mixed[:, None], c_mixed, c_same)
    return (1 - lam) * c_mn + lam * prior.to(A)[None], mixed


# ----------------------------------------------------------------------------- the methods
def _uniform(adv: torch.Tensor, inp: CreditInput) -> torch.Tensor:
    return adv[:, None].expand(-1, len(inp.rollout.trained)).contiguous()


def grpo(inp: CreditInput):
    """Uniform GRPO on the weighted sum of raw rewards (Flow-GRPO). With one reward: plain GRPO."""
    return _uniform(summed_reward_advantage(inp), inp), {}


def per_reward(inp: CreditInput):
    """Per-objective group advantages, then their weighted sum (MixGRPO, Pref-GRPO)."""
    return _uniform(per_objective_advantages(inp) @ _weights(inp).to(inp.group.device), inp), {}


def gdpo(inp: CreditInput):
    """GDPO: the weighted sum of per-objective advantages, re-normalised over the whole (global) batch."""
    A = torch.stack([_ga(inp, r) for r in inp.rewards.values()], 1) @ _weights(inp).to(inp.group.device)
    A = (A - A.mean()) / (A.std(unbiased=False) + inp.cfg.adv_eps)
    return _uniform(A[inp.local], inp), {}


def per_reward_loss(inp: CreditInput):
    """One clipped loss per objective with advantage w_k A_k (DanceGRPO video): returns [B, K, R]."""
    A = per_objective_advantages(inp) * _weights(inp).to(inp.group.device)  # [B, R]
    return A[:, None, :].expand(-1, len(inp.rollout.trained), -1).contiguous(), {}


def noise_weighted(inp: CreditInput):
    """Steps weighted by their noise std sigma_t sqrt(-dt), mean 1 (TempFlow-GRPO's noise-aware weighting)."""
    w = noise_step_weights(inp.rollout)
    return summed_reward_advantage(inp)[:, None] * w[None], _step_diag(w[None], inp.rollout.trained)


def tcd(inp: CreditInput):
    """OTCA's trajectory-level credit decomposition on the summed-reward advantage."""
    W = _tcd(inp)
    return summed_reward_advantage(inp)[:, None] * W, _step_diag(W, inp.rollout.trained)


def moca(inp: CreditInput):
    """OTCA's multi-objective credit allocation, uniform over steps."""
    A, c, diag = _moca(inp)
    return _uniform((c * A).sum(1), inp), diag


def otca(inp: CreditInput):
    """OTCA = TCD x MOCA: A_hat_t^i = W_t^i sum_k c_k^i A_k^i (the review's separable product)."""
    A, c, diag = _moca(inp)
    W = _tcd(inp)
    return W * (c * A).sum(1, keepdim=True), {**diag, **_step_diag(W, inp.rollout.trained)}


def otca_objective(inp: CreditInput):
    """Objective-aware OTCA: every objective gets its own step credit, A_hat_t^i = sum_k c_k^i W_{k,t}^i A_k^i.

    W_{k,t}^i is proportional to |r_k(x0_hat after step t) - r_k(x0_hat before step t)|: the steps
    where objective k was decided (the advantage's sign already says whether the outcome was good),
    clipped, eps-smoothed and normalised like TCD. See objective_step_weights for the cheap estimators.
    """
    A, c, diag = _moca(inp)
    W = objective_step_weights(inp)                                            # [B, R, K]
    adv = (c[:, :, None] * W * A[:, :, None]).sum(1)                          # [B, K]
    for j, k in enumerate(inp.rewards):
        diag.update({f"weight/{k}/step_{int(t)}": float(W[:, j, i].mean()) for i, t in enumerate(inp.rollout.trained)})
    return adv, diag


def objective_step_weights(inp: CreditInput) -> torch.Tensor:
    """W [B, R, K]: per-sample, per-objective step credit from reward gains along x0_hat.

    Cost control (config): rewards are scored on x0_hat at every oa_stride-th step only (a gain over
    several steps is shared evenly among them); only a fraction oa_sample_fraction of the samples
    (chosen by their seed, so the choice does not depend on batch order) is scored; and the scoring
    runs every oa_every iterations. Samples not scored use the amortised profile (an EMA over
    iterations of the mean W), or uniform weights before any estimate exists.
    """
    c, ro = inp.cfg, inp.rollout
    B, T, R = ro.states.shape[0], ro.x0_hat.shape[1], len(inp.rewards)
    dev = ro.states.device
    profile = inp.state.profile if inp.state is not None and inp.state.profile is not None else torch.ones(R, T)
    W = profile.to(dev)[None][:, :, ro.trained].expand(B, -1, -1)
    W = W / W.mean(-1, keepdim=True)                                           # [B, R, K]
    # (a draw of its own stream per sample: the seed's own digits would tie the choice to its noise's seed)
    fresh = torch.tensor([unit_uniform(s, Stream.OBJECTIVE_SCORED) < c.oa_sample_fraction for s in ro.seeds], device=dev)
    if inp.iteration % c.oa_every != 0 or not fresh.any():
        return W
    idx = fresh.nonzero().squeeze(1)
    points = sorted(set(range(0, T, c.oa_stride)) | {T})                      # steps whose input is scored
    seq = torch.cat([ro.x0_hat, ro.states[:, -1:]], 1)[idx][:, points]        # [M, P, *L]
    M, P = seq.shape[:2]
    prompts = [ro.prompts[i] for i in idx.tolist() for _ in range(P)]
    scores = inp.score_x0(seq.flatten(0, 1), prompts)                         # {k: [M * P]}
    r = torch.nan_to_num(torch.stack([scores[k].float().reshape(M, P) for k in inp.rewards], 1))  # [M, R, P]
    gains = torch.zeros(M, R, T, device=dev)
    for j, (a, b) in enumerate(zip(points[:-1], points[1:])):                 # a span's gain, shared evenly
        gains[:, :, a:b] = ((r[:, :, j + 1] - r[:, :, j]).abs() / (b - a))[:, :, None]
    W = W.clone()
    W[idx] = _normalise_over_trained(gains[:, :, ro.trained], c.tcd_eps, c.tcd_max_gain)
    if inp.state is not None:  # amortise: the mean profile over all T steps, EMA over iterations
        new = _normalise_over_trained(gains, c.tcd_eps, c.tcd_max_gain).mean(0).cpu()
        old = inp.state.profile
        inp.state.profile = new if old is None else c.oa_ema * old + (1 - c.oa_ema) * new
    return W


def _tcd(inp: CreditInput) -> torch.Tensor:
    c = inp.cfg
    return tcd_weights(inp.rollout, space=c.tcd_space, window=c.tcd_window, max_gain=c.tcd_max_gain, eps=c.tcd_eps)


def _moca(inp: CreditInput):
    A = per_objective_advantages(inp)
    w = _weights(inp)
    c, cancelled = moca_coefficients(A, w / w.sum(), inp.cfg.moca_lambda)
    diag = {"moca_cancelled": float(cancelled.float().mean())}
    diag.update({f"effective_weight/{k}": float(c[:, j].mean()) for j, k in enumerate(inp.rewards)})
    return A, c, diag


def _step_diag(W: torch.Tensor, trained: torch.Tensor) -> dict:
    """Mean weight of each trained denoising step t (W [B or 1, K], trained [K] the step indices), for heatmaps
    over training: with random trained steps a given t is logged only in the iterations that train it."""
    return {f"weight/step_{int(t)}": float(v) for t, v in zip(trained, W.mean(0))}


def objective_advantages(inp: CreditInput) -> torch.Tensor:
    """[B, K, R]: every objective's own group advantage A_k^i, unweighted, the same at every trained step."""
    A = per_objective_advantages(inp)
    return A[:, None, :].expand(-1, len(inp.rollout.trained), -1).contiguous()


def gradient_mgda(inp: CreditInput):
    """Gradient-level balancing (MARBLE-style, mgda.py): objective_advantages, [B, K, R]; the update computes one
    policy gradient per objective and steps along their min-norm combination, which replaces the reward weights."""
    return objective_advantages(inp), {}


CREDIT_METHODS = {f.__name__: f for f in (grpo, per_reward, gdpo, per_reward_loss, noise_weighted, tcd, moca,
                                          otca, otca_objective, gradient_mgda)}
CreditMethod = Literal["grpo", "per_reward", "gdpo", "per_reward_loss", "noise_weighted", "tcd", "moca", "otca",
                       "otca_objective", "gradient_mgda"]  # the config field's type: the names of CREDIT_METHODS
GRADIENT_LEVEL = ("gradient_mgda",)  # methods whose per-objective advantages the update combines as gradients
assert get_args(CreditMethod) == tuple(CREDIT_METHODS)


def match_rms(adv: torch.Tensor, target: float, all_reduce_sum=lambda t: t) -> tuple[torch.Tensor, float]:
    """Rescale advantages so that their root mean square over the whole batch is `target`: (adv * target / rms, rms).

        rms = sqrt( sum_{processes, i, t} a_{i,t}^2 / #entries )

    adv [B, K] (this process's samples and trained steps), or [B, K, R] with one clipped loss per objective,
    whose effective advantage is the sum over R (that sum's RMS is matched). all_reduce_sum: sums a tensor over
    the processes (the identity on one process), so the scale is the same on every process and does not depend
    on how many there are. An all-zero batch (every group flat) stays zero.
    """
    eff = (adv.sum(-1) if adv.ndim == 3 else adv).double()
    totals = all_reduce_sum(torch.stack([eff.pow(2).sum(), torch.tensor(float(eff.numel()), dtype=eff.dtype, device=eff.device)]))
    rms = float((totals[0] / totals[1].clamp_min(1)).sqrt())
    return (adv * (target / rms) if rms > 0 else adv), rms


def advantage(method: str, inp: CreditInput):
    """Phase 3: this process's advantages ([B, K], or [B, K, R] for per_reward_loss) and diagnostics."""
    if method not in CREDIT_METHODS:
        raise ValueError(f"unknown credit method {method!r}; choose one of {sorted(CREDIT_METHODS)}")
    return CREDIT_METHODS[method](inp)
