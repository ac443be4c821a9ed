"""GPU check: two GRPO iterations with a real preset's transformer architecture, no downloaded weights.

    python bench/gpu_check.py [--preset sd3.5-medium wan2.1-t2v-1.3b] [--peak-tflops 989]
    python bench/gpu_check.py --preset wan2.1-t2v-1.3b --set group_size=4     # change any config field
    python bench/gpu_check.py --tiny      # the same code path on tiny models, on the CPU (tests)
    python bench/gpu_check.py --layers 1 --set height=64 width=64 ...   # the real-architecture path on a CPU

For each preset it builds the transformer from its public architecture (otca_lib/memory.py) with
random weights in the preset's dtype, a LoRA adapter of the preset's rank, gradient checkpointing as
the preset says, and tiny random text encoders / VAE whose output sizes match the transformer (their
cost, once per rollout, is not what this checks). It trains one prompt group of the preset's group
size at the preset's resolution, frames and steps, with the model-free JPEG reward, and prints per
iteration: the time of each phase, the peak GPU memory, and the model FLOP utilisation

    MFU = (rollout forwards + update forward/backward FLOPs) / (sample + update seconds x peak FLOP/s)

with forward FLOPs counted by torch.utils.flop_counter on one sample, a backward taken as 2 forwards
and gradient checkpointing adding one forward. Peak: bf16 dense, 989 TFLOP/s for H100 / H200 SXM.
Beside the measured peak memory it prints otca_lib/memory.py's estimate for the same run (transformer,
LoRA state, rollout, activations; the real text encoders, absent here, left out) to keep that estimate honest.
"""
import argparse
import dataclasses
import sys
import tempfile
import time

import diffusers
import torch
from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline,
                       WanPipeline)
from torch.utils.flop_counter import FlopCounterMode

from otca_lib.config import apply_overrides, preset, smoke
from otca_lib.memory import ARCHITECTURES, GiB, OTHER_PARAMS, build_on_meta, estimate
from otca_lib.policy import load_policy, policy_from_pipeline
from otca_lib.tiny import clip_encoder, image_vae, t5_encoder, tokenizer
from otca_lib.train import Trainer


def real_architecture_pipeline(cfg, device, layers: int | None = None):
    """The preset's transformer (random init) with tiny text encoders / VAE of matching output sizes.

    ``layers`` cuts the transformer to that many blocks (to check this script on a CPU); None: the real count.
    """
    cls_name, kwargs = ARCHITECTURES[cfg.model]
    if layers is not None:
        kwargs = {**kwargs, "num_layers": layers, **({"num_single_layers": layers} if "num_single_layers" in kwargs else {})}
    torch.manual_seed(0)
    with torch.device(device):
        transformer = getattr(diffusers, cls_name)(**kwargs).to(getattr(torch, cfg.dtype))
    for name, module in transformer.named_modules():  # as from_pretrained(dtype=...) does
        if any(k in name.split(".") for k in transformer._keep_in_fp32_modules or []):
            module.float()
    if cfg.family == "sd3":
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=image_vae(latent_channels=16, blocks=4),                     # 8x downsampling, 16 channels
            text_encoder=clip_encoder(True, 768), tokenizer=tokenizer(77),     # pooled 768 + 1280 = 2048
            text_encoder_2=clip_encoder(True, 1280), tokenizer_2=tokenizer(77),
            text_encoder_3=t5_encoder(d_model=4096), tokenizer_3=tokenizer(512))
    if cfg.family == "wan":
        return WanPipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=[0.0] * 16, latents_std=[1.0] * 16),
            text_encoder=t5_encoder(umt5=True, d_model=4096), tokenizer=tokenizer(512))
    raise ValueError(f"gpu_check covers the sd3 and wan families, not {cfg.family!r}")


def forward_flops(tr: Trainer) -> float:
    """FLOPs of one transformer forward on one sample (x2 with CFG), counted by torch."""
    pol = tr.policy
    x = torch.randn(1, *tr.spec.latent_shape, device=tr.acc.device)
    cond = pol.encode_prompts(["a red circle"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pol.velocity(x, torch.full((1,), 0.5, device=x.device), cond)
    return counter.get_total_flops() * (2 if tr.cfg.guidance_scale != 1.0 else 1)


def check(name: str, tiny: bool, peak_tflops: float, overrides: list[str], iterations: int,
          layers: int | None) -> None:
    cfg = preset(name)
    cfg = dataclasses.replace(smoke(cfg) if tiny else cfg, prompts_per_iteration=1, iterations=iterations,
                              eval_every=0, checkpoint_every=0, rewards={"jpeg_compressibility": 1.0},
                              output_dir=tempfile.mkdtemp(prefix="otca-gpu-check-"))
    cfg = apply_overrides(cfg, overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if tiny:
        policy = load_policy(cfg.family, cfg.model, lora_rank=4, device=device)
    else:
        policy = policy_from_pipeline(cfg.family, real_architecture_pipeline(cfg, device, layers), device=device,
                                      lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha or None, keep_reference=False)
    tr = Trainer(cfg, policy=policy, log=False)
    if cfg.gradient_checkpointing:
        tr.policy.unwrapped.enable_gradient_checkpointing()
    f = forward_flops(tr)
    a = tr.arith
    flops = f * (a["samples_per_process"] * cfg.num_steps
                 + a["pairs_per_process"] * (3 + (1 if cfg.gradient_checkpointing else 0)))
    print(f"\n{name}: {sum(p.numel() for p in tr.policy.unwrapped.parameters()) / 1e9:.2f} B parameters, "
          f"{cfg.height}x{cfg.width}{f'x{cfg.frames}f' if cfg.frames else ''}, group {cfg.group_size}, "
          f"{cfg.num_steps} steps ({a['trained_steps_per_sample']} trained), {cfg.dtype}, LoRA r{cfg.lora_rank}, "
          f"checkpointing {cfg.gradient_checkpointing}, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    if not tiny and layers is None:
        dt = torch.finfo(getattr(torch, cfg.dtype)).bits // 8
        est = estimate(cfg, build_on_meta(cfg.model), num_processes=1, fsdp=False)
        est_gib = est["total_GiB"] - OTHER_PARAMS.get(cfg.model, 0) * dt * 1.1 / GiB
        print(f"memory estimate without the real text encoders (otca_lib/memory.py): {est_gib:.1f} GiB "
              f"(activations {est['activations_GiB']:.1f}, rollout {est['rollout_GiB']:.2f})")
    print(f"{'iter':>4} {'sample s':>9} {'reward s':>9} {'adv s':>7} {'update s':>9} {'total s':>8} {'peak GiB':>9} {'MFU':>6}")
    for it in range(cfg.iterations):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m = tr.iteration(it)
        if device == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        mfu = flops / ((m["perf/sample_sec"] + m["perf/update_sec"]) * peak_tflops * 1e12)
        print(f"{it:>4} {m['perf/sample_sec']:>9.2f} {m['perf/reward_sec']:>9.2f} {m['perf/advantage_sec']:>7.3f} "
              f"{m['perf/update_sec']:>9.2f} {time.perf_counter() - t0:>8.2f} {peak:>9.1f} {mfu:>6.1%}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", nargs="*", default=["sd3.5-medium", "wan2.1-t2v-1.3b"])
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU (exercises the script in tests)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the card's bf16 dense peak (H100/H200 SXM: 989)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, as in otca_lib.train")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--layers", type=int, default=None,
                   help="build the real architectures with this many blocks (checks the script on a CPU)")
    args = p.parse_args()
    for name in (["tiny-sd3", "tiny-wan"] if args.tiny else args.preset):
        check(name, args.tiny, args.peak_tflops, args.set, args.iterations, args.layers)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
