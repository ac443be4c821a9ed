"""The ShapesWorld pretraining command writes a folder that loads through the real from_pretrained path."""
import json
from pathlib import Path

import pytest
import torch

from otca_lib import checksums, pretrain, shapesworld as sw
from otca_lib.policy import ModelNotAvailable, load_policy


def test_pretrain_writes_a_verified_loadable_pipeline(tmp_path):
    out = tmp_path / "model"
    assert pretrain.main(["image", "--steps", "3", "--eval-every-steps", "2", "--batch", "4", "--loss", "v",
                          "--shapes-per-color", "2", "--positions-per-shape", "3", "--out", str(out)]) == 0
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["steps"] == 3 and [r["step"] for r in meta["history"]] == [2, 3]
    assert meta["max_sequence_length"] == pretrain.MAX_TOKENS
    assert meta["pretraining_captions"] == 66 and set(pretrain.EVAL_REWARDS["image"]) <= set(meta["held_out"])
    policy = load_policy("sd3-x0", str(out))
    assert policy.pipeline.vae is None and policy.latent_shape(32, 32) == (3, 32, 32)
    cond = policy.encode_prompts(["a large red circle at the center"])
    x, s = torch.randn(1, 3, 32, 32), torch.full((1,), 0.5)
    x0 = policy.transformer(hidden_states=x, timestep=s * 1000, encoder_hidden_states=cond["prompt_embeds"],
                            pooled_projections=cond["pooled_prompt_embeds"], return_dict=False)[0]
    torch.testing.assert_close(x - s * policy.velocity(x, s, cond), x0, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="pretrained as family 'sd3-x0'"):
        load_policy("sd3", str(out))  # its outputs are not velocities
    weights = next((out / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    with pytest.raises(ModelNotAvailable, match="does not match"):
        load_policy("sd3-x0", str(out))


def test_the_biased_pretraining_captions_pair_each_color_with_k_shapes_and_each_shape_with_k_positions():
    train = sw.prompts("image", "train")
    assert pretrain.biased(train) == train
    kept = [sw.parse_caption(c) for c in pretrain.biased(train, shapes_per_color=2, positions_per_shape=3)]
    for color in sw.COLORS:
        assert len({a["shape"] for a in kept if a["color"] == color}) == 2
    rows = {shape: {a["position"] for a in kept if a["shape"] == shape} for shape in sw.SHAPES}
    assert rows["circle"] <= {"top left", "top", "top right"} and len(rows["circle"]) == 3
    assert rows["triangle"] <= {"bottom left", "bottom", "bottom right"}
    assert {a["size"] for a in kept} == set(sw.SIZES)
    videos = pretrain.biased(sw.prompts("video", "train"), shapes_per_color=1, positions_per_shape=1)
    assert videos and all(sw.SHAPES.index(sw.parse_caption(c)["shape"]) == list(sw.COLORS).index(sw.parse_caption(c)["color"]) % 3
                          for c in videos)  # videos have no position: only the color-shape bias applies
    with pytest.raises(ValueError, match="shapes_per_color"):
        pretrain.biased(train, shapes_per_color=0)
    with pytest.raises(SystemExit):  # argparse: "--steps 0: give at least 1 step"
        pretrain.main(["image", "--steps", "0", "--out", "unused"])


def test_v_loss_is_the_x0_loss_weighted_by_one_over_s_squared():
    x0, e = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    s = torch.tensor([0.01, 0.3, 0.9])
    x = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * e
    x0_theta = x0 + 0.1 * torch.randn_like(x0)
    per_sample = ((x0_theta - x0) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(pretrain.x0_loss(x, x0_theta, x0, s), per_sample.mean())
    weight = 1 / torch.tensor([0.05, 0.3, 0.9]) ** 2  # s clamped at 0.05
    torch.testing.assert_close(pretrain.v_loss(x, x0_theta, x0, s), (weight * per_sample).mean())


def test_video_pretraining_loads_as_an_x0_predicting_wan_policy(tmp_path):
    out = tmp_path / "video"
    assert pretrain.main(["video", "--minutes", "0.02", "--batch", "2", "--eval-every", "1000", "--out", str(out)]) == 0
    meta = json.loads((out / "pretrain.json").read_text())
    assert set(pretrain.EVAL_REWARDS["video"]) <= set(meta["held_out"])
    policy = load_policy("wan-x0", str(out))
    assert policy.pipeline.vae is None and policy.latent_shape(32, 32, 8) == (3, 8, 32, 32)
    cond = policy.encode_prompts(["a large red circle moving left"])
    assert cond["prompt_embeds"].shape == (1, pretrain.MAX_TOKENS, 64)
    x, s = torch.randn(1, 3, 8, 32, 32), torch.full((1,), 0.25)
    # the policy's velocity is (x - x0_theta) / s, so x0_hat = x - s v is the transformer's own prediction
    x0 = policy.transformer(hidden_states=x, timestep=s * 1000, encoder_hidden_states=cond["prompt_embeds"],
                            return_dict=False)[0]
    torch.testing.assert_close(x - s * policy.velocity(x, s, cond), x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind,model", [("image", "data/models/shapesworld-image"), ("image2", "data/models/shapesworld2-image"),
                                        ("video", "data/models/shapesworld-video")])
def test_the_policy_is_conditioned_as_the_model_was_pretrained(kind, model, tmp_path):
    """Sampling, the update and evaluation all condition through encode_prompts + velocity: they must give
    the prediction pretraining trained (pretrain.image_x0 / video_x0: MAX_TOKENS text tokens; SD3 without T5
    appends that many zero tokens, and with 256 of them, the default of real SD3, the prediction differs)."""
    root = Path(__file__).resolve().parents[1]
    _, family, predict, _ = pretrain.KINDS[kind]
    policy = load_policy(family, str(root / model), keep_reference=False)
    assert policy.max_sequence_length == pretrain.MAX_TOKENS
    captions = {"image": ["a large red circle at the center", "a small blue triangle at the top left"],
                "image2": ["a large striped red circle at the center", "a small solid blue triangle at the top left"],
                "video": ["a large red circle moving left", "a small blue triangle moving up"]}[kind]
    shape = (2, 3, 8, 32, 32) if kind == "video" else (2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x0, e, s = torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        x, x0_theta = predict(policy.pipeline, x0, captions, e, s)
        v = policy.velocity(x, s, policy.encode_prompts(captions))
    torch.testing.assert_close(x - s.view(-1, *[1] * (x.ndim - 1)) * v, x0_theta, rtol=0, atol=1e-5)
    # a model folder of ours that does not say how many tokens it was trained with is refused, not guessed
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root / model, copy)
    meta = json.loads((copy / "pretrain.json").read_text())
    del meta["max_sequence_length"]
    (copy / "pretrain.json").write_text(json.dumps(meta))
    checksums.write_sha256sums(copy)
    with pytest.raises(ValueError, match="max_sequence_length"):
        load_policy(family, str(copy))
