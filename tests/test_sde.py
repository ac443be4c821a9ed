"""The SDE steps: parity with diffusers, the exact log-prob, and the closed-form Gaussian case."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from otca_lib.sde import SDE, SDE_STEPS, flow_grpo_step, gaussian_log_prob, ode_step


def test_zero_noise_equals_diffusers_euler_step():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    for i, t in enumerate(sched.timesteps[:-1]):
        v = torch.randn(x.shape, generator=g)
        ref = sched.step(v, t, x).prev_sample
        s, s_next = sched.sigmas[i], sched.sigmas[i + 1]
        torch.testing.assert_close(ode_step(x, v, s, s_next).x_next, ref, rtol=0, atol=1e-6)
        out = flow_grpo_step(x, v, s, s_next, noise_level=0.0, noise=torch.randn(x.shape, generator=g))
        torch.testing.assert_close(out.x_next, ref, rtol=0, atol=1e-6)
        x = ref


@pytest.mark.parametrize("name", ["flow_grpo", "dance", "cps"])
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (2, 4, 3, 8, 8)])  # images and videos
def test_log_prob_is_normal_log_prob_averaged(name, shape):
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    s = torch.tensor([0.8, 0.5])
    out = SDE(name, 0.7).step(x, v, s, s - 0.1, noise=torch.randn(shape, generator=g))
    ref = torch.distributions.Normal(out.mean, out.std.expand_as(out.mean)).log_prob(out.x_next).flatten(1).mean(1)
    torch.testing.assert_close(out.log_prob, ref, rtol=1e-5, atol=1e-5)
    # scoring the drawn state again gives the same log-prob (on-policy ratio 1)
    again = SDE(name, 0.7).step(x, v, s, s - 0.1, x_next=out.x_next)
    torch.testing.assert_close(again.log_prob, out.log_prob, rtol=0, atol=1e-6)
    torch.testing.assert_close(gaussian_log_prob(out.x_next, out.mean, out.std), out.log_prob)


def test_exactly_one_of_noise_and_x_next():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="exactly one"):
        flow_grpo_step(x, x, 0.5, 0.4, 0.7)


def test_the_sde_is_a_stochastic_step_and_the_ode_is_not_one():
    assert set(SDE_STEPS) == {"flow_grpo", "dance", "cps"}
    with pytest.raises(ValueError, match="ode_step"):
        SDE("ode", 0.0)


# ---- closed form: data x0 ~ N(m, diag(c^2)); the exact velocity field is analytic -------------------
M = torch.tensor([1.0, -2.0, 0.5])
C = torch.tensor([0.5, 1.5, 0.1])


def exact_velocity(x, s):
    """E[e - x0 | x_s] for x_s = (1 - s) x0 + s e: jointly Gaussian, so the posterior mean is linear in x."""
    s = torch.as_tensor(s).reshape(-1, 1)
    var = (1 - s) ** 2 * C**2 + s**2
    resid = x - (1 - s) * M
    x0_hat = M + (1 - s) * C**2 / var * resid
    e_hat = s / var * resid
    return e_hat - x0_hat


def run_sampler(name, level, T=200, n=40000):
    g = torch.Generator().manual_seed(2)
    sigmas = torch.linspace(1, 0, T + 1)
    x = torch.randn(n, 3, generator=g)
    for t in range(T):
        v = exact_velocity(x, sigmas[t])
        noise = torch.randn(x.shape, generator=g)
        x = ode_step(x, v, sigmas[t], sigmas[t + 1]) if name == "ode" else \
            SDE(name, level).step(x, v, sigmas[t], sigmas[t + 1], noise=noise)
        x = x.x_next
    return x


# CPS is exact only as its noise goes to 0: it re-noises by O(1) per step around the posterior mean,
# which shrinks the variance (on this Gaussian, a = 0.7 gives a std 16 % too small at T = 200).
@pytest.mark.parametrize("name,level", [("ode", 0.0), ("flow_grpo", 0.7), ("dance", 0.5), ("cps", 0.1)])
def test_sde_reproduces_gaussian_data(name, level):
    x = run_sampler(name, level)
    torch.testing.assert_close(x.mean(0), M, atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), C, atol=0.03, rtol=0.03)
    assert abs(torch.corrcoef(x.T)[0, 1]) < 0.03  # independent coordinates stay independent


def test_cps_with_large_noise_shrinks_the_variance():
    x = run_sampler("cps", 0.7)
    torch.testing.assert_close(x.mean(0), M, atol=0.03, rtol=0)
    assert (x.std(0) < 0.9 * C).all()
