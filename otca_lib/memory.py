"""Model size and GPU memory per process, estimated before any weights are downloaded (``--dry-run``).

The transformer of a real preset is built on PyTorch's meta device from its architecture (below,
copied from the public config.json of each checkpoint), so its parameter count is exact while no
memory is allocated. The rest is an estimate, stated with its assumptions so a user can check it:

    weights      frozen transformer + text encoders + VAE in the config dtype (FSDP shards the transformer)
    trainable    LoRA (or all) weights in fp32 + their gradient (fp32) + AdamW's two moments (fp32) = 16 B/param
    rollout      states and x0_hat of the process's samples, fp32: B x (2T + 1) x latent size x 4 B
    activations  one micro-batch's forward + backward, per transformer block 34 x tokens x width x 2 B
                 (Korthikanti et al. 2022, "Reducing Activation Recomputation", with flash attention, bf16);
                 with gradient checkpointing, 2 x tokens x width x 2 B per block plus one block in full.
                 CFG doubles the batch. Tokens = latent patches + text tokens.
    overhead     +10 % for the CUDA context, allocator fragmentation and temporaries.

It is an estimate: measure with bench/gpu_check.py on the real card before a long run.
"""

from __future__ import annotations

import torch

GiB = 2**30

# Transformer architectures of the real checkpoints (diffusers config.json fields), so the dry run
# needs no download. Sources: the config.json files of the hub repos named by the keys.
ARCHITECTURES = {
    "stabilityai/stable-diffusion-3.5-medium": ("SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")),
    "black-forest-labs/FLUX.1-dev": ("FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56))),
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": ("WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)),
}
# Wan2.2-A14B has two such transformers (high- and low-noise experts): both are resident.
EXPERTS = {"Wan-AI/Wan2.2-T2V-A14B-Diffusers": 2}

# Frozen non-transformer parameters (text encoders + VAE), from the public model cards, approximate.
OTHER_PARAMS = {
    "stabilityai/stable-diffusion-3.5-medium": 4.76e9 + 0.12e9 + 0.69e9 + 0.08e9,  # T5-XXL enc, CLIP-L, CLIP-G, VAE
    "black-forest-labs/FLUX.1-dev": 4.76e9 + 0.12e9 + 0.08e9,                       # T5-XXL enc, CLIP-L, VAE
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": 5.68e9 + 0.13e9,                            # UMT5-XXL enc, Wan VAE
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": 5.68e9 + 0.13e9,
}
LATENT = {"sd3": (16, 8, 1), "flux": (16, 8, 1), "wan": (16, 8, 4)}   # channels, spatial, temporal factor
TEXT_TOKENS = {"sd3": 77 + 256, "flux": 512, "wan": 512}
PATCH = {"sd3": (1, 2, 2), "flux": (1, 2, 2), "wan": (1, 2, 2)}


def build_on_meta(model: str) -> torch.nn.Module:
    """The transformer of a known real checkpoint, on the meta device (no memory, exact parameter count)."""
    import diffusers

    if model not in ARCHITECTURES:
        raise ValueError(f"no built-in architecture for {model!r}; known: {sorted(ARCHITECTURES)}")
    cls_name, kwargs = ARCHITECTURES[model]
    with torch.device("meta"):
        return getattr(diffusers, cls_name)(**kwargs)


def lora_parameter_count(transformer: torch.nn.Module, rank: int, targets: list[str]) -> int:
    """r (in + out) for every nn.Linear whose qualified name ends with one of the targets (peft's matching)."""
    n = 0
    for name, mod in transformer.named_modules():
        if isinstance(mod, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            n += rank * (mod.in_features + mod.out_features)
    return n


def estimate(cfg, transformer: torch.nn.Module, *, num_processes: int, fsdp: bool) -> dict[str, float]:
    """GiB per process for the config; see the module docstring for every term."""
    from .policy import DEFAULT_LORA_TARGETS

    experts = EXPERTS.get(cfg.model, 1)
    dt = torch.finfo(getattr(torch, cfg.dtype)).bits // 8
    base = sum(p.numel() for p in transformer.parameters()) * experts
    trainable = (lora_parameter_count(transformer, cfg.lora_rank, DEFAULT_LORA_TARGETS[cfg.family]) * experts
                 if cfg.lora_rank > 0 else base)
    shard = num_processes if fsdp else 1
    weights = (base / shard + OTHER_PARAMS.get(cfg.model, 0)) * dt
    train_state = trainable * 16 / shard
    C, f, ft = LATENT[cfg.family]
    frames = (cfg.frames - 1) // ft + 1 if cfg.frames else 1
    latent = C * frames * (cfg.height // f) * (cfg.width // f)
    samples = cfg.prompts_per_iteration * cfg.group_size // num_processes
    rollout = samples * (2 * cfg.num_steps + 1) * latent * 4
    pt, ph, pw = PATCH[cfg.family]
    tokens = frames // pt * (cfg.height // f // ph) * (cfg.width // f // pw) + TEXT_TOKENS[cfg.family]
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    blocks = sum(len(m) for m in transformer.children() if isinstance(m, torch.nn.ModuleList))
    micro = cfg.train_micro_batch * (2 if cfg.guidance_scale != 1.0 else 1)
    per_block_full = 34 * micro * tokens * width * 2
    act = (blocks * 2 * micro * tokens * width * 2 + per_block_full) if cfg.gradient_checkpointing \
        else blocks * per_block_full
    total = (weights + train_state + rollout + act) * 1.1
    return {"transformer_params_B": base / 1e9, "trainable_params_M": trainable / 1e6,
            "weights_GiB": weights / GiB, "trainable_state_GiB": train_state / GiB, "rollout_GiB": rollout / GiB,
            "activations_GiB": act / GiB, "total_GiB": total / GiB, "tokens": tokens}


def report(cfg, num_processes: int) -> str:
    """A table of the estimate for DDP and FSDP at this run's and typical process counts."""
    tr = build_on_meta(cfg.model)
    lines = [f"{cfg.model}: transformer {sum(p.numel() for p in tr.parameters()) * EXPERTS.get(cfg.model, 1) / 1e9:.2f} B "
             f"parameters, {cfg.height}x{cfg.width}{f'x{cfg.frames}f' if cfg.frames else ''}, group {cfg.group_size}, "
             f"micro-batch {cfg.train_micro_batch}, {cfg.dtype}, gradient checkpointing {cfg.gradient_checkpointing}",
             f"{'processes':>9} {'sharding':>8} {'weights':>8} {'train':>7} {'rollout':>8} {'activ.':>7} {'total GiB':>10}"]
    for n in sorted({num_processes, 8, 32}):
        if (cfg.prompts_per_iteration * cfg.group_size) % n:
            continue
        for fsdp in (False, True):
            e = estimate(cfg, tr, num_processes=n, fsdp=fsdp)
            lines.append(f"{n:>9} {'fsdp' if fsdp else 'ddp':>8} {e['weights_GiB']:>8.1f} {e['trainable_state_GiB']:>7.1f} "
                         f"{e['rollout_GiB']:>8.2f} {e['activations_GiB']:>7.1f} {e['total_GiB']:>10.1f}")
    lines.append("estimate (otca_lib/memory.py); measure with bench/gpu_check.py before a long run")
    return "\n".join(lines)
