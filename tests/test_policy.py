"""The policy adapters on tiny random pipelines: shapes, batch independence, parity with
the diffusers pipelines' own sampling loop and decoding, LoRA/reference, save/load, errors."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub

import pytest  # noqa: E402
import torch  # noqa: E402

from otca_lib import config, policy as policy_module  # noqa: E402
from otca_lib.policy import load_policy, policy_from_pipeline  # noqa: E402
from otca_lib.tiny import save_tiny_pipeline, tiny_pipeline  # noqa: E402

H = W = 32  # pixels -> 8x8 latents (images), 4x4 latents x 3 latent frames (Wan, 9 frames)
FRAMES = 9
PROMPTS = ["a red cat", "a dog on the beach", "an old house in the forest"]


@pytest.fixture(scope="module", params=["sd3", "flux", "wan"])  # the tiny pipelines (sd3-x0 and wan-x0 are tested in test_pretrain)
def policy(request):
    return load_policy(request.param, f"tiny-{request.param}")


def _latents(policy, batch, seed=0):
    shape = policy.latent_shape(H, W, FRAMES if policy.is_video else None)
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def test_latent_shapes(policy):
    expected = {"sd3": (4, 8, 8), "flux": (4, 8, 8), "wan": (4, 3, 4, 4)}[policy.family]
    assert _latents(policy, 1).shape[1:] == expected


def test_velocity_shape_dtype_and_batch_independence(policy):
    cond = policy.encode_prompts(PROMPTS)
    assert all(t.shape[0] == len(PROMPTS) for t in cond.values())
    x, sigma = _latents(policy, 3), torch.tensor([0.9, 0.5, 0.1])
    v = policy.velocity(x, sigma, cond)
    assert v.shape == x.shape and v.dtype == torch.float32
    singles = [policy.velocity(x[i : i + 1], sigma[i : i + 1], {k: t[i : i + 1] for k, t in cond.items()}) for i in range(3)]
    torch.testing.assert_close(torch.cat(singles), v, rtol=0, atol=1e-5)
    # the prompt matters
    assert not torch.allclose(v[0], policy.velocity(x[:1], sigma[:1], {k: t[1:2] for k, t in cond.items()})[0])


def test_decode_range_and_shape(policy):
    pixels = policy.decode(_latents(policy, 2))
    expected = (2, 3, FRAMES, H, W) if policy.is_video else (2, 3, H, W)
    assert pixels.shape == expected and pixels.dtype == torch.float32
    assert pixels.min() >= 0 and pixels.max() <= 1


def _pipeline_sample(policy, x1, steps):
    """Run the diffusers pipeline itself without CFG; return (final unpacked latents, pixels in [0, 1])."""
    pipe, final = policy.pipeline, {}
    pipe.set_progress_bar_config(disable=True)

    def keep_latents(pipe, i, t, kwargs):  # the latents after the last step, before decoding
        final["latents"] = kwargs["latents"]
        return {}

    common = dict(
        prompt=PROMPTS[0], height=H, width=W, num_inference_steps=steps, output_type="pt",
        max_sequence_length=policy.max_sequence_length, callback_on_step_end=keep_latents,
    )
    if policy.family == "sd3":
        pixels = pipe(latents=x1, guidance_scale=1.0, **common).images
    elif policy.family == "flux":  # no negative prompt: no true CFG; guidance is the distilled embedding
        pixels = pipe(latents=pipe._pack_latents(x1, *x1.shape), guidance_scale=policy.guidance_scale, **common).images
        final["latents"] = pipe._unpack_latents(final["latents"], H, W, pipe.vae_scale_factor)
    else:
        pixels = pipe(latents=x1, guidance_scale=1.0, num_frames=FRAMES, **common).frames
        pixels = pixels.permute(0, 2, 1, 3, 4)  # (B, F, 3, H, W) -> (B, 3, F, H, W)
    return final["latents"], pixels


def test_euler_loop_reproduces_the_pipeline(policy):
    steps = 3
    x1 = _latents(policy, 1, seed=1)
    cond = policy.encode_prompts(PROMPTS[:1])
    sigmas = policy.sigmas(steps, H, W)
    x = x1
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * policy.velocity(x, s.reshape(1), cond)

    ref_latents, ref_pixels = _pipeline_sample(policy, x1, steps)
    assert torch.equal(sigmas, policy.pipeline.scheduler.sigmas)  # the schedule the pipeline just used
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0 and (sigmas.diff() < 0).all()
    torch.testing.assert_close(x, ref_latents, rtol=0, atol=1e-4)
    torch.testing.assert_close(policy.decode(x), ref_pixels.float(), rtol=0, atol=1e-4)


class _Wrapper(torch.nn.Module):
    """Stands in for DDP: forwards calls, hides the model's attributes (no .config, .dtype)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


@pytest.mark.parametrize("family", ["sd3", "flux", "wan"])
def test_lora_trainable_and_reference(family):
    base = load_policy(family, f"tiny-{family}")
    policy = load_policy(family, f"tiny-{family}", lora_rank=4)
    names = [n for n, p in policy.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(policy.trainable_parameters()) == len(names)

    cond, x, sigma = policy.encode_prompts(PROMPTS[:2]), _latents(policy, 2), torch.tensor([0.7, 0.3])
    v_base = base.velocity(x, sigma, cond)
    torch.testing.assert_close(policy.velocity(x, sigma, cond), v_base, rtol=0, atol=1e-6)  # LoRA B = 0
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.2 * torch.randn_like(p))
    v_lora = policy.velocity(x, sigma, cond)
    assert (v_lora - v_base).abs().max() > 1e-3
    # the trainer may wrap the transformer (DDP, accelerate): velocity calls the wrapper
    policy.transformer = _Wrapper(policy.transformer)
    assert policy.unwrapped is policy.transformer.module
    torch.testing.assert_close(policy.velocity(x, sigma, cond), v_lora, rtol=0, atol=0)
    assert policy.transformer.calls == 1
    with policy.reference():
        torch.testing.assert_close(policy.velocity(x, sigma, cond), v_base, rtol=0, atol=1e-6)
    torch.testing.assert_close(policy.velocity(x, sigma, cond), v_lora, rtol=0, atol=0)
    assert policy.transformer.calls == 2  # the reference bypassed the wrapper
    assert [n for n, p in policy.transformer.module.named_parameters() if p.requires_grad] == names


def test_full_finetune_reference_is_a_frozen_copy():
    policy = load_policy("sd3", "tiny-sd3")
    cond, x, sigma = policy.encode_prompts(PROMPTS[:2]), _latents(policy, 2), torch.tensor([0.7, 0.3])
    v0 = policy.velocity(x, sigma, cond)
    assert len(policy.trainable_parameters()) == len(list(policy.transformer.parameters()))
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert (policy.velocity(x, sigma, cond) - v0).abs().max() > 1e-3
    with policy.reference():
        torch.testing.assert_close(policy.velocity(x, sigma, cond), v0, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="keep_reference"):
        with load_policy("sd3", "tiny-sd3", keep_reference=False).reference():
            pass


def test_save_and_load_through_from_pretrained(policy, tmp_path):
    loaded = load_policy(policy.family, save_tiny_pipeline(policy.family, str(tmp_path)))
    assert type(loaded.pipeline) is type(policy.pipeline)
    cond = policy.encode_prompts(PROMPTS[:2])
    for k, t in loaded.encode_prompts(PROMPTS[:2]).items():
        torch.testing.assert_close(t, cond[k], rtol=0, atol=0)
    x, sigma = _latents(policy, 2), torch.tensor([0.8, 0.2])
    torch.testing.assert_close(loaded.velocity(x, sigma, cond), policy.velocity(x, sigma, cond), rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.sigmas(4, H, W), policy.sigmas(4, H, W), rtol=0, atol=0)


def test_missing_weights_and_unknown_family():
    with pytest.raises(RuntimeError, match=r"no-such-org/no-such-model.*--set model="):
        load_policy("sd3", "no-such-org/no-such-model")
    with pytest.raises(ValueError, match="sd3, flux, wan, sd3-x0, wan-x0"):
        load_policy("sdxl", "tiny-sd3")
    assert config.FAMILIES == policy_module.FAMILIES  # config validates families without importing diffusers


def _two_expert_wan(boundary_ratio=0.5):
    """The tiny Wan pipeline with a second, differently initialised expert below the boundary (Wan 2.2's layout)."""
    from diffusers import WanPipeline, WanTransformer3DModel

    base = tiny_pipeline("wan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        low = WanTransformer3DModel.from_config(base.transformer.config)
    return WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae, scheduler=base.scheduler,
                       transformer=base.transformer, transformer_2=low, boundary_ratio=boundary_ratio)


def test_two_expert_wan_switches_per_sample_and_trains_both():
    pipe = _two_expert_wan()
    high, low = pipe.transformer, pipe.transformer_2
    policy = policy_from_pipeline("wan", pipe, lora_rank=4)
    x = _latents(policy, 4)
    sigma = torch.tensor([0.9, 0.2, 0.6, 0.4])            # boundary 0.5: experts high, low, high, low
    cond = policy.encode_prompts(PROMPTS[:2] * 2)
    v = policy.velocity(x, sigma, cond)
    for i, expert in enumerate([high, low, high, low]):  # each sample got its own expert's prediction
        alone = expert(hidden_states=x[i:i + 1], timestep=sigma[i:i + 1] * 1000,
                       encoder_hidden_states=cond["prompt_embeds"][i:i + 1], return_dict=False)[0]
        torch.testing.assert_close(v[i:i + 1], alone.float(), rtol=1e-4, atol=1e-5)
    # LoRA on both experts, and the loss reaches both through one mixed batch
    trainable = policy.trainable_parameters()
    assert any(p is q for p in trainable for q in high.parameters()) and any(p is q for p in trainable for q in low.parameters())
    with torch.no_grad():  # LoRA B starts at 0, which would leave A without gradient
        for name, p in policy.unwrapped.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    policy.velocity(x, sigma, cond).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    with policy.reference():                             # adapters off on both experts
        torch.testing.assert_close(policy.velocity(x, sigma, cond), v, rtol=1e-4, atol=1e-5)


def test_two_expert_wan_trains_in_the_trainer(tmp_path):
    import dataclasses

    from otca_lib import checkpoint
    from otca_lib.config import preset, smoke
    from otca_lib.train import Trainer

    cfg = dataclasses.replace(smoke(preset("tiny-wan")), num_steps=4, train_steps="all", lora_rank=4,
                              learning_rate=1e-2, output_dir=str(tmp_path / "run"))
    policy = policy_from_pipeline("wan", _two_expert_wan(0.85), lora_rank=4)   # trained sigmas 1, 0.9 | 0.75
    before = {n: p.detach().clone() for n, p in policy.unwrapped.named_parameters() if p.requires_grad}
    Trainer(cfg, policy=policy, log=False).run()
    moved = {n.split(".")[0] for n, p in policy.unwrapped.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert moved == {"high", "low"}                      # steps on both sides of the boundary trained both experts
    saved = checkpoint.verify(checkpoint.resolve(tmp_path / "run"))
    assert saved["iteration"] == cfg.iterations
