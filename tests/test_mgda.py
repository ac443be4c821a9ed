"""Gradient-level balancing (mgda.py, credit gradient_mgda): closed-form min-norm points, and the update it drives."""
import dataclasses

import pytest
import torch

from otca_lib.mgda import combine, min_norm_weights


def test_min_norm_weights_closed_forms():
    # min c1^2 + 4 c2^2 on c1 + c2 = 1: c = (4/5, 1/5); with a floor of 0.3 the constraint binds: (0.7, 0.3)
    G = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    torch.testing.assert_close(min_norm_weights(G), torch.tensor([0.8, 0.2], dtype=torch.float64))
    torch.testing.assert_close(min_norm_weights(G, floor=0.3), torch.tensor([0.7, 0.3], dtype=torch.float64))
    # opposite unit gradients: the min-norm point cancels them (norm 0) at (1/2, 1/2)
    c = min_norm_weights(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    torch.testing.assert_close(c, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # three gradients, two of them opposite: the min-norm point cancels that pair and drops the third
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    c = min_norm_weights(g @ g.T)
    assert float((c @ g).norm()) < 1e-6 and c[2] < 1e-6
    # a floor keeps the third in: c_3 = 0.1 exactly (any more would lengthen the direction)
    assert abs(float(min_norm_weights(g @ g.T, floor=0.1)[2]) - 0.1) < 1e-9
    with pytest.raises(ValueError, match="floor"):
        min_norm_weights(torch.eye(3), floor=0.5)


def test_combine_steps_along_a_direction_no_objective_opposes():
    g = torch.tensor([[1.0, 0.0, 0.0], [-0.5, 0.5, 0.0]])       # 135 degrees apart: conflicting
    flat, c, diag = combine(g, floor=0.0)
    assert (diag["cosines"] >= -1e-9).all()                     # neither gets worse to first order
    # the min-norm point of the unit vectors, scaled by the mean gradient norm
    u1, u2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]) / 2 ** 0.5
    expect = (c[0] * u1 + c[1] * u2) * (1 + 0.5 ** 0.5) / 2
    torch.testing.assert_close(flat[:2].double(), expect.double(), rtol=1e-5, atol=1e-7)
    # two unit vectors: the min-norm point is their midpoint (1/2, 1/2), the bisector, whatever the raw norms
    torch.testing.assert_close(c, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert abs(float(diag["cosines"][0] - diag["cosines"][1])) < 1e-9


@pytest.mark.parametrize("beta, iterations", [(0.0, 1), (0.5, 2)])
def test_with_one_objective_gradient_mgda_is_per_reward_loss(tmp_path, beta, iterations):
    """One reward: the min-norm weight is 1 and the direction is the objective's gradient itself, so gradient_mgda
    trains exactly as per_reward_loss (one clipped loss per objective, weight 1), with the KL term's gradient added
    alike when beta > 0 (2 iterations: at the first the policy is the reference and that gradient is 0)."""
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    weights = {}
    for method in ("per_reward_loss", "gradient_mgda"):
        c = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path / method), eval_every=0,
                                iterations=iterations, credit=method, rewards={"brightness": 1.0}, beta=beta)
        t = Trainer(c, log=False)
        rows = t.run()
        weights[method] = [p.detach().clone() for p in t.policy.trainable_parameters()]
    for a, b in zip(*weights.values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert rows[-1]["policy/mgda_weight/brightness"] == 1.0


def test_two_objectives_train_and_log_their_weights(tmp_path):
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    c = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path), eval_every=0, iterations=2,
                            credit="gradient_mgda", rewards={"brightness": 1.0, "jpeg_compressibility": 0.1})
    rows = Trainer(c, log=False).run()
    w = [rows[-1][f"policy/mgda_weight/{k}"] for k in c.rewards]
    assert abs(sum(w) - 1) < 1e-6 and min(w) >= c.mgda_floor - 1e-9
    assert 0 <= rows[-1]["conflict/against"] <= 1


def test_conflict_probe_closed_forms(tmp_path):
    """The conflict probe (conflict_every) on grpo: with one reward the objective's own gradient is the update's
    direction (cosine 1); with two exactly opposed rewards (JPEG size and minus JPEG size) weighted 1 and 0.5, the
    summed reward is the first one at half scale, so the step follows it (cosine 1) and the second objective's
    gradient points exactly against it (cosine -1, conflict/against 1)."""
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    def last_row(rewards, every):
        c = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path / str(len(rewards)) / str(every)),
                                eval_every=0, iterations=1, credit="grpo", rewards=rewards, conflict_every=every,
                                optimizer_steps_per_iteration=2)  # the probe must see the first step's own pairs
        return Trainer(c, log=False).run()[-1]

    one = last_row({"brightness": 1.0}, 1)
    assert abs(one["conflict/cosine/brightness"] - 1) < 1e-4 and one["conflict/against"] == 0
    two = last_row({"jpeg_incompressibility": 1.0, "jpeg_compressibility": 0.5}, 1)
    assert abs(two["conflict/cosine/jpeg_incompressibility"] - 1) < 1e-4
    assert abs(two["conflict/cosine/jpeg_compressibility"] + 1) < 1e-4 and two["conflict/against"] == 1
    assert not any(k.startswith("conflict/") for k in last_row({"brightness": 1.0}, 0))  # off by default
