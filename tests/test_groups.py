"""Group advantages and the clipped surrogate: closed-form cases and invariants."""
import torch

from otca_lib.groups import group_advantages
from otca_lib.update import clipped_surrogate

GROUP = torch.arange(3).repeat_interleave(4)  # 3 prompts x 4 samples


def test_zero_mean_unit_std_per_group():
    r = torch.randn(12, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 5.0, 0.1]).repeat_interleave(4)
    a = group_advantages(r, GROUP, eps=0.0)
    for g in range(3):
        ag = a[GROUP == g]
        assert abs(float(ag.mean())) < 1e-6
        assert abs(float(ag.std(unbiased=False)) - 1) < 1e-5  # population std, documented


def test_two_samples_give_plus_minus_one():
    a = group_advantages(torch.tensor([3.0, 1.0]), torch.tensor([0, 0]), eps=0.0)
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0]))


def test_global_std_uses_batch_std_of_centred_rewards():
    r = torch.tensor([0.0, 2.0, 10.0, 10.0])
    a = group_advantages(r, torch.tensor([0, 0, 1, 1]), global_std=True, eps=0.0)
    # centred: [-1, 1, 0, 0] -> std sqrt(0.5)
    torch.testing.assert_close(a, torch.tensor([-1, 1, 0, 0]) / 0.5**0.5)


def test_equal_rewards_give_zero_not_nan():
    a = group_advantages(torch.ones(8), torch.zeros(8, dtype=torch.long))
    assert torch.equal(a, torch.zeros(8))


def test_nonfinite_rewards_are_excluded_from_their_group():
    r = torch.tensor([1.0, float("nan"), 3.0, float("inf"), 5.0, 6.0])
    a = group_advantages(r, torch.tensor([0, 0, 0, 1, 1, 1]), eps=0.0)
    assert torch.isfinite(a).all()
    assert a[1] == 0 and a[3] == 0
    torch.testing.assert_close(a[[0, 2]], torch.tensor([-1.0, 1.0]))  # as if the NaN sample were absent
    torch.testing.assert_close(a[[4, 5]], torch.tensor([-1.0, 1.0]))


def test_single_valid_sample_and_clipping():
    a = group_advantages(torch.tensor([1.0, float("nan")]), torch.tensor([0, 0]))
    assert torch.equal(a, torch.zeros(2))
    r = torch.tensor([100.0] + [0.0] * 99)
    assert float(group_advantages(r, torch.zeros(100, dtype=torch.long), clip=5.0).max()) == 5.0


def test_invariant_to_sample_order():
    r = torch.randn(12, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    a = group_advantages(r, GROUP)
    torch.testing.assert_close(group_advantages(r[perm], GROUP[perm]), a[perm])


def test_clipped_loss_gradient_is_zero_outside_clip_range():
    eps = 0.1
    old = torch.zeros(4)
    # ratios 1.5 (A>0: clipped), 0.5 (A<0: clipped), 1.05 (inside), 0.5 (A>0: unclipped side)
    new = torch.log(torch.tensor([1.5, 0.5, 1.05, 0.5])).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 1.0, 1.0])
    loss, ratio = clipped_surrogate(new, old, adv, eps)
    loss.sum().backward()
    grad = new.grad
    assert grad[0] == 0 and grad[1] == 0
    torch.testing.assert_close(grad[2], -adv[2] * ratio[2].detach())  # d(-A rho)/d logp = -A rho
    torch.testing.assert_close(grad[3], -adv[3] * ratio[3].detach())
    torch.testing.assert_close(loss.detach(), torch.tensor([-1.1, 0.9, -1.05, -0.5]))


def test_extreme_rewards_do_not_overflow_the_group_statistics():
    r = torch.tensor([1.0, 2.0, 4.0, 8.0, 3.0, 3.0, 5.0, 1.0])
    group = torch.arange(2).repeat_interleave(4)
    for scale in (1e20, 1e30):   # float32 squares overflow above ~1e19: every advantage would be 0
        # (r - mean) / (std + eps) is invariant under scaling r and eps together
        torch.testing.assert_close(group_advantages(r * scale, group, eps=1e-4 * scale), group_advantages(r, group),
                                   rtol=1e-6, atol=1e-6)
