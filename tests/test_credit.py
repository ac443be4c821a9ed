"""Credit methods: hand-computed cases and invariants (docs/algorithm.md sections 2-3)."""
import dataclasses

import pytest
import torch

from otca_lib.groups import group_advantages
from otca_lib.config import Config
from otca_lib.credit import (CREDIT_METHODS, CreditInput, CreditState, advantage, moca_coefficients,
                             objective_step_weights, tcd_weights)
from otca_lib.sample import Rollout, RolloutSpec

B, T = 8, 5
GROUP = torch.arange(2).repeat_interleave(4)


def rollout(states=None, x0_hat=None, trained=None, seeds=None):
    g = torch.Generator().manual_seed(0)
    states = torch.randn(B, T + 1, 2, 4, 4, generator=g) if states is None else states
    x0_hat = torch.randn(states.shape[0], T, *states.shape[2:], generator=g) if x0_hat is None else x0_hat
    n = states.shape[0]
    return Rollout([f"p{i}" for i in range(n)], {}, None, RolloutSpec(torch.linspace(1, 0, T + 1), states.shape[2:]), states, x0_hat,
                   torch.zeros(n, T), torch.arange(T - 1) if trained is None else trained,
                   torch.linspace(0.5, 0.1, T), list(range(100, 100 + n)) if seeds is None else seeds)


def rewards(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.rand(B, generator=g), "b": torch.rand(B, generator=g) * 3}


def cfg(**kw):
    return dataclasses.replace(Config(), rewards={"a": 1.0, "b": 0.5}, **kw)


def inp(ro=None, r=None, c=None, local=slice(0, B), **kw):
    return CreditInput(rewards() if r is None else r, GROUP, local, rollout() if ro is None else ro,
                       cfg() if c is None else c, score_x0=mean_channel_scores, state=CreditState(), **kw)


def mean_channel_scores(latents, prompts):
    """A synthetic reward per latent channel: objective a reads channel 0, objective b channel 1."""
    return {"a": latents[:, 0].flatten(1).mean(1), "b": latents[:, 1].flatten(1).mean(1)}


def test_grpo_with_one_reward_is_plain_grpo():
    r = {"a": torch.rand(B, generator=torch.Generator().manual_seed(3))}
    c = dataclasses.replace(Config(), rewards={"a": 1.0})
    plain = group_advantages(r["a"], GROUP)
    for name in ("grpo", "per_reward", "moca", "otca"):
        adv, _ = advantage(name, inp(r=r, c=dataclasses.replace(c, moca_lambda=0.0)))
        expected = plain[:, None] * (tcd_weights(rollout()) if name == "otca" else 1)
        torch.testing.assert_close(adv, expected.expand(B, T - 1), rtol=1e-6, atol=1e-6)


def linear_progress_states():
    """Unit vectors rotating towards the final one so that cos(e_t, e_T) = t / T: equal gains."""
    e1, e2 = torch.zeros(32), torch.zeros(32)
    e1[0], e2[1] = 1, 1
    c = torch.arange(T + 1) / T
    traj = c[:, None] * e1 + (1 - c**2).sqrt()[:, None] * e2
    return traj.reshape(1, T + 1, 2, 4, 4).expand(B, -1, -1, -1, -1)


def test_tcd_with_equal_gains_is_uniform():
    ro = rollout(states=linear_progress_states())
    torch.testing.assert_close(tcd_weights(ro), torch.ones(B, T - 1))


@pytest.mark.parametrize("space", ["latent", "x0_hat"])
@pytest.mark.parametrize("window,max_gain", [(1, 0.0), (2, 0.05)])
def test_tcd_weights_finite_nonnegative_mean_one(space, window, max_gain):
    g = torch.Generator().manual_seed(5)
    const = torch.ones(B, T + 1, 2, 4, 4)
    reverse = linear_progress_states().flip(1)
    for states in (torch.randn(B, T + 1, 2, 4, 4, generator=g), const, reverse, torch.zeros_like(const)):
        w = tcd_weights(rollout(states=states), space=space, window=window, max_gain=max_gain)
        assert torch.isfinite(w).all() and (w >= 0).all()
        torch.testing.assert_close(w.mean(1), torch.ones(B))
    torch.testing.assert_close(tcd_weights(rollout(states=const)), torch.ones(B, T - 1))


def test_tcd_puts_weight_where_progress_happened():
    s = linear_progress_states().clone()
    s[:, 1:3] = s[:, 0:1]  # steps 0 and 1 make no progress, step 2 makes up for them
    w = tcd_weights(rollout(states=s))
    assert w[0, 0] < 0.01 and w[0, 1] < 0.01 and w[0, 2] > w[0, 3] > 0.5


def test_moca_closed_form_cases():
    prior = torch.tensor([0.5, 0.5])
    A = torch.tensor([[1.0, -2.0], [0.5, 2.0], [-3.0, -1.0], [0.0, 1.0]])
    c, cancelled = moca_coefficients(A, prior, lam=0.0)
    combined = (c * A).sum(1)
    torch.testing.assert_close(combined[[0, 3]], torch.zeros(2))          # mixed signs, or a zero: cancelled
    assert cancelled.tolist() == [True, False, False, True]
    torch.testing.assert_close(c[1], torch.tensor([1.0, 0.0]))           # same signs: all on the smallest |A_k|
    torch.testing.assert_close(c[2], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(c.sum(1), torch.ones(4))
    c1, _ = moca_coefficients(A, prior, lam=1.0)
    torch.testing.assert_close(c1, prior.expand(4, 2))                   # lambda = 1: the exploration weights
    A3 = torch.tensor([[2.0, -1.0, 1.0]])                                # three objectives, mixed
    c3, _ = moca_coefficients(A3, torch.ones(3) / 3, lam=0.0)
    assert abs(float((c3 * A3).sum())) < 1e-6 and (c3 >= 0).all() and abs(float(c3.sum()) - 1) < 1e-6


def permute_input(p):
    ro = rollout()
    pr = Rollout([ro.prompts[i] for i in p.tolist()], {}, None, ro.spec, ro.states[p], ro.x0_hat[p],
                 ro.log_probs[p], ro.trained, ro.step_std, [ro.seeds[i] for i in p.tolist()])
    r = rewards()
    return CreditInput({k: v[p] for k, v in r.items()}, GROUP[p], slice(0, B), pr, cfg(oa_sample_fraction=0.5),
                       score_x0=mean_channel_scores, state=CreditState())


@pytest.mark.parametrize("name", sorted(CREDIT_METHODS))
def test_every_method_is_order_invariant_and_splits_over_processes(name):
    c = cfg(oa_sample_fraction=0.5)
    full, _ = advantage(name, inp(c=c))
    assert full.shape[:2] == (B, T - 1) and torch.isfinite(full).all()
    p = torch.randperm(B, generator=torch.Generator().manual_seed(7))
    perm, _ = advantage(name, permute_input(p))
    torch.testing.assert_close(perm, full[p], rtol=1e-4, atol=1e-5)
    # two "processes": each holds half the samples, the rewards are the gathered global batch
    halves = []
    for sl in (slice(0, 4), slice(4, 8)):
        ro = rollout()
        part = Rollout(ro.prompts[sl], {}, None, ro.spec, ro.states[sl], ro.x0_hat[sl], ro.log_probs[sl],
                       ro.trained, ro.step_std, ro.seeds[sl])
        halves.append(advantage(name, inp(ro=part, c=c, local=sl))[0])
    torch.testing.assert_close(torch.cat(halves), full, rtol=1e-4, atol=1e-5)


def early_and_late_rollout():
    """x0_hat channel 0 (objective a) changes during steps 0-1 only; channel 1 (objective b) during 3-4 only."""
    x = torch.zeros(B, T + 1, 2, 4, 4)
    for t in range(T + 1):
        x[:, t, 0] = min(t, 2) / 2
        x[:, t, 1] = max(t - 3, 0) / 2
    return rollout(states=x, x0_hat=x[:, :T].clone(), trained=torch.arange(T))


def test_objective_aware_credit_finds_where_each_objective_changed():
    ro = early_and_late_rollout()
    W = objective_step_weights(inp(ro=ro))                                 # [B, R, K]
    assert (W[:, 0, :2] > 2).all() and (W[:, 0, 2:] < 0.01).all()
    assert (W[:, 1, 3:] > 2).all() and (W[:, 1, :3] < 0.01).all()
    torch.testing.assert_close(W.mean(-1), torch.ones(B, 2))
    # strided scoring (every 2nd step) still separates the objectives, at a coarser resolution
    Ws = objective_step_weights(inp(ro=ro, c=cfg(oa_stride=2)))
    assert Ws[0, 0, :2].mean() > Ws[0, 0, 2:].mean() and Ws[0, 1, 3:].mean() > Ws[0, 1, :2].mean()


def test_objective_aware_amortisation_reuses_the_profile():
    ro = early_and_late_rollout()
    state = CreditState()
    calls = []

    def counting(latents, prompts):
        calls.append(len(latents))
        return mean_channel_scores(latents, prompts)

    c = cfg(oa_every=2)
    first = objective_step_weights(CreditInput(rewards(), GROUP, slice(0, B), ro, c, 0, counting, state))
    second = objective_step_weights(CreditInput(rewards(), GROUP, slice(0, B), ro, c, 1, counting, state))
    assert len(calls) == 1 and state.profile.shape == (2, T)
    torch.testing.assert_close(second, first)  # iteration 1 reuses the profile learnt at iteration 0


def test_per_reward_loss_keeps_one_advantage_per_objective():
    adv, _ = advantage("per_reward_loss", inp())
    assert adv.shape == (B, T - 1, 2)
    ga = group_advantages(rewards()["b"], GROUP)
    torch.testing.assert_close(adv[:, 0, 1], 0.5 * ga)


def test_match_rms_sets_the_batch_rms_and_keeps_flat_batches_and_directions():
    from otca_lib.credit import match_rms

    a = torch.tensor([[3.0, -4.0], [0.0, 0.0]])            # sum of squares 25 over 4 entries: rms 2.5
    out, rms = match_rms(a, 1.0)
    assert rms == 2.5 and torch.allclose(out, a / 2.5) and torch.allclose(out.pow(2).mean().sqrt(), torch.tensor(1.0))
    zero, rms0 = match_rms(torch.zeros(2, 3), 1.0)
    assert rms0 == 0 and torch.equal(zero, torch.zeros(2, 3))
    # one loss per objective: the RMS of the summed advantage is matched
    per = torch.tensor([[[1.0, 2.0]], [[-3.0, 0.0]]])      # sums 3, -3: rms 3
    out, rms = match_rms(per, 1.5)
    assert rms == 3.0 and torch.allclose(out, per / 2)
    # split over two "processes": summing their totals gives the one-process scale
    halves = [a[:1], a[1:]]
    totals = sum(torch.stack([h.double().pow(2).sum(), torch.tensor(float(h.numel()), dtype=torch.float64)]) for h in halves)
    scaled = [match_rms(h, 1.0, lambda t: totals)[0] for h in halves]
    assert torch.allclose(torch.cat(scaled), match_rms(a, 1.0)[0])


def test_adv_rms_reaches_the_update(tmp_path, monkeypatch):
    import dataclasses

    import otca_lib.train as train_module
    from otca_lib.config import preset, smoke

    c = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path), eval_every=0, adv_rms=0.5,
                            credit="moca", rewards={"brightness": 1.0, "jpeg_compressibility": 0.1})
    t = train_module.Trainer(c, log=False)
    seen, real = [], train_module.update

    def spy(policy, optimizer, acc, rollout, adv, cfg, **kw):
        seen.append(adv.clone())
        return real(policy, optimizer, acc, rollout, adv, cfg, **kw)

    monkeypatch.setattr(train_module, "update", spy)
    m = t.iteration(0)
    assert abs(float(seen[0].pow(2).mean().sqrt()) - 0.5) < 1e-6 and m["credit/rms_before_matching"] > 0


def test_splitting_alignment_into_parts_changes_only_objective_aware_methods():
    """shapesworld2-image-parts: same weighted total as shapesworld2-image, so total-only methods are unchanged
    (up to rounding) and objective-aware ones are not (the pattern is standardised on its own)."""
    from otca_lib.config import preset
    whole, split = preset("shapesworld2-image"), preset("shapesworld2-image-parts")
    g = torch.Generator().manual_seed(5)
    parts = {k: torch.rand(B, generator=g) for k in whole.eval_metrics}
    parts["sw2_pattern"] = parts["sw2_pattern"] * 4  # a part with a larger spread: per-objective scaling matters
    others = {"sw2_quality": torch.rand(B, generator=g), "sw2_aesthetic": torch.rand(B, generator=g)}
    r_whole = {"sw2_alignment": torch.stack(list(parts.values())).mean(0), **others}
    r_split = {k: parts[k] if k in parts else others[k] for k in split.rewards}
    assert sum(split.rewards.values()) == pytest.approx(1.0 + sum(v for k, v in whole.rewards.items() if k != "sw2_alignment"))
    for name, same in (("grpo", True), ("tcd", True), ("noise_weighted", True), ("per_reward", False), ("moca", False)):
        a, _ = advantage(name, inp(r=r_whole, c=dataclasses.replace(whole, moca_lambda=0.0)))
        b, _ = advantage(name, inp(r=r_split, c=dataclasses.replace(split, moca_lambda=0.0)))
        assert torch.allclose(a, b, atol=1e-5) == same, name
