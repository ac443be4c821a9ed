"""The policy update (phase 4 of an iteration: sample -> reward -> advantage -> update).

Each (sample i, trained step t) pair is one action of a Gaussian policy. With the log-prob recomputed
under the current weights, rho = exp(logp_theta - logp_old), the clipped surrogate (PPO, as used by
Flow-GRPO / DanceGRPO; docs/algorithm.md section 2) per pair is

    L_clip = max(-A rho, -A clip(rho, 1 - eps_c, 1 + eps_c))

and the loss of an optimizer step is the mean over its pairs of L_clip + beta KL_ref, where KL_ref is
the mean-space KL to the reference policy (sde.kl_in_mean_space). The advantage A is a [B, K] tensor
from credit.py, so credit assignment changes the advantages and never this code.

Pairs are shuffled and split into ``optimizer_steps_per_iteration`` mini-batches, each processed in
micro-batches of ``train_micro_batch`` pairs whose gradients accumulate. Every micro-batch is one
batched transformer call over (sample, step) pairs of different samples and noise levels.

Non-finite guard: an optimizer step whose (all-reduced, so equal on every process) gradient norm is
NaN or inf is skipped, never applied, and counted (``policy/skipped_steps``); the trainer stops the run
after ``max_nonfinite_steps`` such steps in a row. Weights that are not finite after a step (finite
gradients times a huge learning rate) stop the run at once with NonFiniteError.
"""

from __future__ import annotations

import contextlib
import torch

from . import mgda
from .fsdp import full, local
from .sde import kl_in_mean_space
from .seeds import Stream, generator


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor,
                      clip_range: float, sum_objectives: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair PPO loss [N] (or [N, R] with sum_objectives=False) and ratio [N]; log-probs [N], adv [N] or [N, R].

    Outside [1 - eps_c, 1 + eps_c] on the side the advantage pushes towards, the clipped term wins the
    max and the gradient is exactly zero: one mini-batch cannot move a step's probability far.
    With adv [N, R] (one advantage per objective, credit.per_reward_loss) each objective gets its own
    clipped term and the R terms are summed: an objective pushing against the clip no longer
    silences the others, which a clip of their sum would.
    """
    ratio = torch.exp(log_prob - old_log_prob)
    r = ratio[:, None] if adv.ndim == 2 else ratio
    loss = torch.maximum(-adv * r, -adv * r.clamp(1 - clip_range, 1 + clip_range))
    return (loss.sum(-1) if adv.ndim == 2 and sum_objectives else loss), ratio


def recompute(policy, rollout, b: torch.Tensor, t: torch.Tensor):
    """Score the recorded transitions (sample b[j], step t[j]) under the policy's current weights, with the
    rollout's own SDE and guidance (rollout.spec).

    One batched transformer call over pairs of different samples and noise levels. b, t [N] long.
    Returns the sde.Step (log_prob [N], mean, std) of states[b, t] -> states[b, t + 1].
    """
    x, x_next = rollout.states[b, t], rollout.states[b, t + 1]
    s, s_next = rollout.sigmas[t], rollout.sigmas[t + 1]
    v = policy.guided_velocity(x, s, *rollout.conditioning(b), rollout.spec.guidance_scale)
    return rollout.spec.sde.step(x, v, s, s_next, x_next=x_next)


class NonFiniteError(RuntimeError):
    """Training produced NaN / inf where it must not (the weights, or too many gradients in a row)."""


class NonFiniteGuard:
    """Counts optimizer steps skipped for a non-finite gradient norm; ``limit`` of them in a row is an error.
    The trainer keeps one for the whole run, so the count runs on across iterations."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def record(self, finite: bool, iteration: int) -> None:
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            raise NonFiniteError(
                f"iteration {iteration}: {self.in_a_row} optimizer steps in a row had a non-finite loss or gradient "
                f"(all skipped, {self.total} in the run): lower learning_rate or noise_level, or check the rewards "
                "(reward/nonfinite in metrics.jsonl); the last checkpoint is unaffected")


def grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients together (0 for parameters without a gradient), a float32 scalar."""
    norms = [full(p.grad.detach().float().norm()) for p in params if p.grad is not None]  # (a shard's: all-reduced)
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def shuffled_pairs(rollout, adv: torch.Tensor, seed: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (sample b, trained step t, advantage a) pairs of a rollout, flattened and shuffled: b, t [B K] long and
    a [B K] (or [B K, R]). The shuffle is seeded (stream SHUFFLE) so every process and a resumed run agree."""
    B, K = adv.shape[:2]
    device = adv.device
    b_idx = torch.arange(B, device=device).repeat_interleave(K)
    t_idx = rollout.trained.to(device).repeat(B)
    a_flat = adv.reshape(B * K, *adv.shape[2:])
    perm = torch.randperm(B * K, generator=generator(seed, Stream.SHUFFLE, iteration)).to(device)
    return b_idx[perm], t_idx[perm], a_flat[perm]


def pair_loss(policy, rollout, b: torch.Tensor, t: torch.Tensor, a: torch.Tensor, cfg, sums: dict,
              per_objective: bool = False, kl_column: bool = False) -> torch.Tensor:
    """Per-pair loss [N] of (sample b, step t) pairs with advantages a: the clipped surrogate, plus beta times the
    KL to the reference policy when beta > 0. With per_objective (a [N, R]): one surrogate per objective, [N, R],
    without the KL term, or with kl_column (and beta > 0) [N, R + 1], the last column beta times the KL, for the
    update to add its gradient to the objectives' combination (gradient_mgda). Adds the pairs' diagnostics to
    ``sums``."""
    st = recompute(policy, rollout, b, t)
    old = rollout.log_probs[b, t]
    loss, ratio = clipped_surrogate(st.log_prob, old, a, cfg.clip_range, sum_objectives=not per_objective)
    if cfg.beta > 0 and (kl_column or not per_objective):
        with torch.no_grad(), policy.reference():
            mean_ref = recompute(policy, rollout, b, t).mean
        kl = kl_in_mean_space(st.mean, mean_ref, st.std)
        loss = torch.cat([loss, cfg.beta * kl[:, None]], 1) if per_objective else loss + cfg.beta * kl
        sums["kl_to_ref"] += float(kl.detach().sum())
    with torch.no_grad():
        d = st.log_prob.detach() - old
        sums["loss"] += float(loss.detach().sum())
        sums["approx_kl"] += float((0.5 * d**2).sum())
        sums["clipfrac"] += float(((ratio - 1).abs() > cfg.clip_range).float().sum())
        sums["ratio"] += float(ratio.detach().sum())
    return loss


def summed_gradient(policy, accelerator, rollout, pairs, chunks: list[slice], per_opt: int, cfg, sums: dict) -> dict:
    """Accumulate the gradient of the summed loss of one optimizer step's micro-batches into p.grad (all-reduced
    over processes after the last micro-batch, by DDP). -> no diagnostics."""
    b_idx, t_idx, a_flat = pairs
    for j, sl in enumerate(chunks):
        with contextlib.nullcontext() if j == len(chunks) - 1 else accelerator.no_sync(policy.transformer):
            loss = pair_loss(policy, rollout, b_idx[sl], t_idx[sl], a_flat[sl], cfg, sums)
            accelerator.backward(loss.sum() / per_opt)
    return {}


def objective_gradients(policy, accelerator, rollout, pairs, chunks: list[slice], per_opt: int, cfg,
                        sums: dict, kl_row: bool = False) -> torch.Tensor:
    """One policy gradient per objective over an optimizer step's micro-batches: g_k, the gradient of the clipped
    surrogate with objective k's advantages alone (pairs' a [N, R]), all-reduced over processes. -> [R, D], D the
    number of trained weights (flattened in policy.trainable_parameters() order), or with kl_row (and beta > 0)
    [R + 1, D], the last row the gradient of beta times the KL. One forward pass per micro-batch, shared by the
    backward passes; p.grad is not touched."""
    b_idx, t_idx, a_flat = pairs
    params = policy.trainable_parameters()
    rows = a_flat.shape[-1] + int(kl_row and cfg.beta > 0)
    grads = torch.zeros(rows, sum(p.numel() for p in params), device=a_flat.device)
    for sl in chunks:
        with accelerator.no_sync(policy.transformer):  # reduced by hand below, in one all-reduce
            loss = pair_loss(policy, rollout, b_idx[sl], t_idx[sl], a_flat[sl], cfg, sums, per_objective=True,
                             kl_column=kl_row)
            for k in range(len(grads)):
                gk = torch.autograd.grad(loss[:, k].sum() / per_opt, params, retain_graph=k < len(grads) - 1,
                                         allow_unused=True)
                grads[k] += torch.cat([(torch.zeros_like(p) if g is None else g).float().flatten() for p, g in zip(params, gk)])
    return accelerator.reduce(grads, "mean")


def balanced_gradient(policy, accelerator, rollout, pairs, chunks: list[slice], per_opt: int, cfg, sums: dict) -> dict:
    """gradient_mgda (mgda.py): one gradient per objective, combined by the min-norm weights into p.grad, plus the
    KL term's gradient when beta > 0 (an anchor, not an objective: added after the balancing, unweighted).
    -> diagnostics: the weights and every objective's cosine with the combination."""
    params = policy.trainable_parameters()
    g = objective_gradients(policy, accelerator, rollout, pairs, chunks, per_opt, cfg, sums, kl_row=True)
    R = pairs[2].shape[-1]
    direction, c, diag = mgda.combine(g[:R], cfg.mgda_floor)
    if len(g) > R:
        direction = direction + g[R].to(direction.dtype)
    for p, d in zip(params, direction.split([p.numel() for p in params])):
        p.grad = d.view_as(p).to(p.dtype)
    return {"weights": c, "cosines": diag["cosines"]}


def conflict_cosines(policy, accelerator, rollout, pairs, chunks: list[slice], per_opt: int, cfg) -> torch.Tensor:
    """The conflict probe (config conflict_every; MARBLE's diagnostic for any credit method): the cosine of every
    objective's own policy gradient g_k (objective_gradients, on the same pairs) with the step the method is
    about to take, d = the accumulated p.grad. -> [R]; a negative entry: that objective's gradient points
    against the update. Call after the step's gradient is accumulated and before the optimizer step."""
    params = policy.trainable_parameters()
    g = objective_gradients(policy, accelerator, rollout, pairs, chunks, per_opt, cfg, {k: 0.0 for k in SUMS})
    d = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).float().flatten() for p in params])
    return mgda.cosines(g, d)


SUMS = ("loss", "approx_kl", "clipfrac", "kl_to_ref", "ratio")  # per-pair diagnostics summed by pair_loss


def update(policy, optimizer, accelerator, rollout, adv: torch.Tensor, cfg, *, iteration: int,
           ema=None, guard: NonFiniteGuard | None = None, balance: bool = False,
           conflict_adv: torch.Tensor | None = None) -> dict[str, float]:
    """Phase 4: optimizer steps on this process's rollout with advantages adv [B, K] (or [B, K, R]). -> metrics.
    ema: an ema.EMA of the trained weights, stepped after every optimizer step; guard: the run's NonFiniteGuard
    (default: a fresh one with cfg.max_nonfinite_steps); balance: adv is [B, K, R] and the R objectives' gradients
    are combined by MGDA's min-norm (credit gradient_mgda) instead of summing their losses; conflict_adv: every
    objective's own advantages [B, K, R] (credit.objective_advantages) to run the conflict probe on the first
    optimizer step (gradient_mgda measures the same cosines at every step without it)."""
    guard = guard or NonFiniteGuard(cfg.max_nonfinite_steps)
    pairs = shuffled_pairs(rollout, adv, cfg.seed, iteration)
    # the probe's pairs are the update's pairs (the same seeded shuffle), with per-objective advantages
    probe = None if conflict_adv is None else shuffled_pairs(rollout, conflict_adv, cfg.seed, iteration)
    n = len(pairs[0])
    per_opt = n // cfg.optimizer_steps_per_iteration
    params = policy.trainable_parameters()
    gradient = balanced_gradient if balance else summed_gradient
    sums = {k: 0.0 for k in SUMS}
    grad_norms, skipped, weights, cosines = [], 0, [], []
    for o in range(cfg.optimizer_steps_per_iteration):
        chunks = [slice(lo, min(lo + cfg.train_micro_batch, (o + 1) * per_opt))
                  for lo in range(o * per_opt, (o + 1) * per_opt, cfg.train_micro_batch)]
        step = gradient(policy, accelerator, rollout, pairs, chunks, per_opt, cfg, sums)
        if balance:
            weights.append(step["weights"])
            cosines.append(step["cosines"])
        elif probe is not None and o == 0:
            cosines.append(conflict_cosines(policy, accelerator, rollout, probe, chunks, per_opt, cfg))
        # (clip_grad_norm_ returns the norm before clipping; the gradients are all-reduced by now, so every
        # process sees the same norm and takes the same decision)
        norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else grad_norm(params)
        finite = bool(torch.isfinite(norm))
        if finite:
            grad_norms.append(float(norm))
            optimizer.step()
            if ema is not None:
                ema.step()
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        guard.record(finite, iteration)
    # (summed over processes: with sharded weights (fsdp.py) each process checks its own shards)
    bad = int(accelerator.reduce(torch.tensor(float(sum(not torch.isfinite(local(p).detach()).all() for p in params)),
                                              device=adv.device), "sum"))
    if bad:
        raise NonFiniteError(f"iteration {iteration}: {bad} of {len(params)} trained tensors became non-finite "
                             f"after an optimizer step with finite gradients (learning_rate={cfg.learning_rate}): "
                             "lower the learning rate; the last checkpoint is unaffected")
    metrics = {f"policy/{k}": v / n for k, v in sums.items() if k != "kl_to_ref" or cfg.beta > 0}
    metrics["policy/skipped_steps"] = float(skipped)
    if grad_norms:
        metrics["policy/grad_norm"] = sum(grad_norms) / len(grad_norms)
    if weights:  # gradient_mgda: mean min-norm weight over the optimizer steps
        for k, name in enumerate(cfg.rewards):
            metrics[f"policy/mgda_weight/{name}"] = float(sum(w[k] for w in weights) / len(weights))
    if cosines:  # per objective: mean cosine with the step; the share of steps where some objective's was < 0
        for k, name in enumerate(cfg.rewards):
            metrics[f"conflict/cosine/{name}"] = float(sum(c[k] for c in cosines) / len(cosines))
        metrics["conflict/against"] = sum(float(c.min() < 0) for c in cosines) / len(cosines)
    return metrics
