"""Statistical checks of the sampler: every stochastic transition is the Gaussian its log-prob claims.

For a rollout of B samples with every step but the last stochastic, the policy's Gaussian of step t is
recomputed from the recorded state (update.recompute: mean mu_t, std std_t) and the standardised
residual z_t = (x_{t+1} - mu_t) / std_t is tested. Under a correct sampler z_t is the step's fresh
noise: N(0, 1) in every coordinate, independent of the initial noise, of the other steps' noise and of
the other samples' noise. The checks use M = B x D coordinates per step (D = latent size), and bounds
from the null distributions at about six standard errors (a false alarm has probability of order 1e-9
per check; the draws are seeded, so the test is deterministic anyway):

    sample correlation of two independent N(0, 1) columns ~ N(0, 1/M)        -> |corr| < 6 / sqrt(M)
    sample mean ~ N(0, 1/M), sample variance ~ N(1, 2/M)                      -> 6 / sqrt(M), 6 sqrt(2/M)
    Kolmogorov-Smirnov distance to Phi: P(D > d) <= 2 exp(-2 M d^2)           -> d = sqrt(ln(2e9) / (2M))

The first version of the sampler drew step 0's noise from a generator seeded like the initial noise,
so z_0 *was* x_init: corr(z_0, x_init) = 1.000, which the first check catches (closing note of issue 17).
The same test checks that the recorded log-prob is the Gaussian log-density of the recorded transition.
"""
import math

import pytest
import torch

from otca_lib.config import preset
from otca_lib.policy import load_policy
from otca_lib.sample import RolloutSpec, sample
from otca_lib.sde import SDE
from otca_lib.update import recompute

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
T = 6


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.pow(2).mean() * b.pow(2).mean()).sqrt())


def ks_distance_to_normal(z: torch.Tensor) -> float:
    """sup_x |F_M(x) - Phi(x)| of the M values in z."""
    z = z.flatten().double().sort().values
    m = len(z)
    phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    i = torch.arange(1, m + 1, dtype=torch.float64)
    return float(torch.maximum(i / m - phi, phi - (i - 1) / m).max())


@torch.no_grad()
def rollout_and_residuals(family, model, sde, B, seeds, init_seeds=None):
    policy = load_policy(family, model, keep_reference=False)
    c = preset(f"tiny-{family}")
    spec = RolloutSpec(policy.sigmas(T, c.height, c.width), policy.latent_shape(c.height, c.width, c.frames or None),
                       SDE(sde, 0.7), batch_size=B // 2)
    words = ["red", "blue", "green", "cat", "dog", "tree", "house", "boat"]
    prompts = [f"a {words[i % 8]} {words[(i // 8) % 8]}" for i in range(B)]
    ro = sample(policy, prompts, spec, trained=torch.arange(T - 1), seeds=seeds, init_seeds=init_seeds, decode=False)
    z = []
    for t in range(T - 1):
        b = torch.arange(B)
        st = recompute(policy, ro, b, torch.full((B,), t))
        x_next = ro.states[:, t + 1]
        z.append((x_next - st.mean) / st.std)
        # the recorded log-prob is the Gaussian log-density of the recorded transition (mean over dims)
        by_hand = (-((x_next - st.mean) ** 2) / (2 * st.std**2) - torch.log(st.std) - LOG_SQRT_2PI).flatten(1).mean(1)
        torch.testing.assert_close(ro.log_probs[:, t], by_hand, rtol=0, atol=1e-4)
    return ro, torch.stack(z, 1)                                     # z [B, T - 1, *L]


@pytest.mark.parametrize("family,model,sde,B", [("sd3", "tiny-sd3-pixel", "flow_grpo", 32),
                                                ("sd3", "tiny-sd3-pixel", "dance", 32),
                                                ("sd3", "tiny-sd3-pixel", "cps", 32),
                                                ("wan", "tiny-wan", "flow_grpo", 64)])   # a video latent
def test_every_step_is_fresh_standard_normal_noise(family, model, sde, B):
    ro, z = rollout_and_residuals(family, model, sde, B, seeds=[1000 + i for i in range(B)])
    x_init = ro.states[:, 0]
    M = z[:, 0].numel()
    corr_bound, mean_bound, var_bound = 6 / math.sqrt(M), 6 / math.sqrt(M), 6 * math.sqrt(2 / M)
    ks_bound = math.sqrt(math.log(2e9) / (2 * M))
    other = torch.roll(torch.arange(B), 1)                           # sample i paired with sample i - 1
    assert abs(corr(x_init, x_init[other])) < corr_bound, "initial noise repeats across samples"
    for t in range(T - 1):
        zt = z[:, t]
        checks = {"initial noise": corr(zt, x_init), "another sample's step noise": corr(zt, zt[other]),
                  "another sample's initial noise": corr(zt, x_init[other]),
                  **{f"step {u}'s noise": corr(zt, z[:, u]) for u in range(t)}}
        for what, c in checks.items():
            assert abs(c) < corr_bound, f"{sde}: step {t}'s noise has correlation {c:+.3f} with {what} (bound {corr_bound:.3f})"
        mean, var = float(zt.double().mean()), float(zt.double().var())
        assert abs(mean) < mean_bound and abs(var - 1) < var_bound, f"{sde} step {t}: residual mean {mean:.4f}, var {var:.4f}"
        d = ks_distance_to_normal(zt)
        assert d < ks_bound, f"{sde} step {t}: KS distance {d:.4f} to N(0, 1) (bound {ks_bound:.4f})"


def test_residual_is_the_named_step_noise_and_a_group_can_share_its_initial_noise():
    from otca_lib.sample import initial_noise, step_noise

    B = 8
    seeds = [50 + i for i in range(B)]
    group_seeds = [7, 7, 7, 7, 9, 9, 9, 9]                          # two groups sharing their initial noise
    ro, z = rollout_and_residuals("sd3", "tiny-sd3-pixel", "flow_grpo", B, seeds, init_seeds=group_seeds)
    shape = ro.states.shape[2:]
    torch.testing.assert_close(ro.states[:, 0], initial_noise(group_seeds, shape, "cpu"), rtol=0, atol=0)
    assert torch.equal(ro.states[0, 0], ro.states[3, 0]) and not torch.equal(ro.states[0, 0], ro.states[4, 0])
    for t in range(T - 1):
        torch.testing.assert_close(z[:, t], step_noise(seeds, t, shape, "cpu"), rtol=0, atol=1e-3)
    assert abs(corr(z[:4, 0], z[[1, 2, 3, 0], 0])) < 6 / math.sqrt(z[:4, 0].numel())  # the group's steps differ


def test_every_stream_and_key_tuple_gives_its_own_seed():
    from otca_lib.seeds import Stream, sample_seed

    assert len({int(s) for s in Stream}) == len(Stream)
    # tuples numpy's SeedSequence maps to one seed (zero padding, 32-bit word splitting) stay apart here
    for a, b in [((5,), (5, 0)), ((5, 0), (5, 0, 0)), ((2, 5, 7), (2, 5 + 7 * 2**32)), ((0, 0, 0), (0,))]:
        assert sample_seed(*a) != sample_seed(*b), (a, b)
    # every key tuple the trainer, evaluation and sampler form, over a few seeds, iterations and samples
    keys = [(seed, s, it, i) for seed in range(3) for s in (Stream.SAMPLE, Stream.GROUP) for it in range(4) for i in range(16)]
    keys += [(seed, s, it) for seed in range(3) for s in (Stream.PROMPTS, Stream.TRAINED_STEPS, Stream.SHUFFLE)
             for it in range(4)]
    keys += [(seed, Stream.EVAL, i) for seed in range(3) for i in range(16)]
    samples = [sample_seed(*k) for k in keys]
    keys += [(x, Stream.INIT_NOISE) for x in samples] + [(x, Stream.STEP_NOISE, t) for x in samples for t in range(8)]
    assert len({sample_seed(*k) for k in keys}) == len(keys)
    assert all(0 <= x < 2**63 for x in samples)
    with pytest.raises(ValueError, match="non-negative"):
        sample_seed(-1, Stream.SAMPLE)
