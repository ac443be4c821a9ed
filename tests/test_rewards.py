"""Rewards: registry, shapes, and the JPEG rewards' ordering on images whose compressibility is obvious."""
import pytest
import torch

from otca_lib.rewards import REWARDS, build_rewards, reward


def test_jpeg_rewards_order_flat_below_noise_and_batch_shapes():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    noise = torch.rand(1, 3, 32, 32, generator=g)
    images = torch.cat([flat, noise])
    fns = build_rewards(["jpeg_compressibility", "jpeg_incompressibility", "brightness"])
    r = reward(fns, images, ["a", "b"])
    assert set(r) == set(fns) and all(v.shape == (2,) and v.dtype == torch.float32 for v in r.values())
    assert r["jpeg_compressibility"][0] > r["jpeg_compressibility"][1]
    torch.testing.assert_close(r["jpeg_incompressibility"], -r["jpeg_compressibility"])
    # videos (B, 3, F, H, W): the mean over frames; a video of one repeated frame scores like the frame
    video = images.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    torch.testing.assert_close(reward(fns, video, ["a", "b"])["jpeg_compressibility"], r["jpeg_compressibility"])


def test_unknown_reward_and_bad_shape_are_clear_errors():
    with pytest.raises(ValueError, match="registered rewards"):
        build_rewards(["no_such_reward"])
    with pytest.raises(ValueError, match="returned shape"):
        reward({"bad": lambda x, p: torch.zeros(3)}, torch.zeros(2, 3, 4, 4), ["a", "b"])
    assert {"jpeg_compressibility", "jpeg_incompressibility", "brightness"} <= set(REWARDS)
