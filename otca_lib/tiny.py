"""Tiny random-init pipelines of the real diffusers classes: offline, deterministic, for tests and CPU demos.

``tiny_pipeline(kind, seed)`` builds one of PIPELINES (an SD3, FLUX or Wan pipeline of a few hundred thousand
parameters, or "sd3-pixel": an SD3 transformer on 32 x 32 RGB pixels without a VAE, whose samples are what the
transformer makes, so that even simple rewards are learnable). The models named "tiny-<kind>" in a config are
these (TINY_MODELS). The parts (word-level tokenizer, CLIP / T5 text encoders, image VAE) are public: the
ShapesWorld pretraining and bench/gpu_check.py build their own pipelines from them.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)


def word_vocab(words) -> dict[str, int]:
    """A word-level vocabulary with the special tokens the tiny tokenizers and text encoders expect first."""
    return {tok: i for i, tok in enumerate(["<pad>", "</s>", "<unk>", *dict.fromkeys(words)])}


WORDS = (
    "a an the of and with in on at by over under top bottom middle , . photo painting drawing picture image video "
    "cat dog bird fish horse car tree house roof chair table bowl fruit flower mountain mountains river lake sea "
    "sky sun moon star night city street field forest beach boat man woman child background circle square "
    "triangle red green blue yellow orange purple black white small big old new happy running flying sitting parked"
).split()
VOCAB = word_vocab(WORDS)


def tokenizer(model_max_length: int, vocab: dict | None = None) -> PreTrainedTokenizerFast:
    """Lowercase word-level tokenizer ending every sequence with </s> (CLIP pools there, T5 expects it)."""
    tok = Tokenizer(models.WordLevel(vocab=vocab or VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length,
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
    )


def clip_encoder(with_projection: bool, projection_dim: int = 16):
    """A 2-layer CLIP text encoder of width 16 over VOCAB (with a projection: SD3's pooled encoders)."""
    config = CLIPTextConfig(
        vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=projection_dim,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,  # pooled output is read at the first </s>
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def t5_encoder(umt5: bool = False, d_model: int = 32):
    """A 2-layer T5 (or UMT5, Wan's) encoder over VOCAB."""
    kwargs = dict(
        vocab_size=len(VOCAB), d_model=d_model, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return UMT5EncoderModel(UMT5Config(**kwargs)) if umt5 else T5EncoderModel(T5Config(**kwargs))


def image_vae(latent_channels: int = 4, blocks: int = 3) -> AutoencoderKL:
    """An image VAE with 2^(blocks - 1) downsampling: 3 blocks -> 32 x 32 px <-> 8 x 8 latents of 4 channels."""
    return AutoencoderKL(
        block_out_channels=(8,) * blocks, down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, latent_channels=latent_channels, norm_num_groups=4,
        layers_per_block=1, sample_size=32, scaling_factor=1.5, shift_factor=0.1,
    )


def _sd3(sample_size: int, patch_size: int, channels: int, pos_embed_max_size: int, shift: float, make_vae=None):
    """An SD3 pipeline of 2 layers (width 32) on sample_size^2 inputs of `channels`, with the tiny text encoders.
    Weights are drawn in the pipeline's order: transformer, VAE (make_vae(), or none), CLIP, CLIP, T5."""
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=patch_size, in_channels=channels, out_channels=channels, num_layers=2,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
        pooled_projection_dim=32, pos_embed_max_size=pos_embed_max_size)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=make_vae() if make_vae else None,
        text_encoder=clip_encoder(True), tokenizer=tokenizer(77), text_encoder_2=clip_encoder(True),
        tokenizer_2=tokenizer(77), text_encoder_3=t5_encoder(), tokenizer_3=tokenizer(512))


def sd3_pixel() -> StableDiffusion3Pipeline:
    """SD3 on 32 x 32 RGB pixels, patches of 4: no VAE."""
    return _sd3(32, 4, 3, 8, shift=1.0)


def sd3() -> StableDiffusion3Pipeline:
    """SD3 on 8 x 8 latents of the tiny image VAE (32 x 32 px)."""
    return _sd3(8, 2, 4, 16, shift=3.0, make_vae=image_vae)


def flux() -> FluxPipeline:
    """FLUX (packed latents, dynamic shift) on the 8 x 8 latents of the tiny image VAE."""
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=image_vae(),
                        text_encoder=clip_encoder(False), tokenizer=tokenizer(77),
                        text_encoder_2=t5_encoder(), tokenizer_2=tokenizer(512))


def wan() -> WanPipeline:
    """Wan on a tiny video VAE: 3 spatial (8x) and 2 temporal (4x) downsamplings, 9 frames of 32 x 32 px ->
    latents (4, 3, 4, 4)."""
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True],
                           latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.8, 1.2, 1.0])
    return WanPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                       text_encoder=t5_encoder(umt5=True), tokenizer=tokenizer(512))


PIPELINES = {"sd3-pixel": sd3_pixel, "sd3": sd3, "flux": flux, "wan": wan}   # kind -> builder
TINY_MODELS = {"tiny-sd3": "sd3", "tiny-flux": "flux", "tiny-wan": "wan", "tiny-sd3-pixel": "sd3"}  # name -> family


def tiny_pipeline(kind: str, seed: int = 0):
    """PIPELINES[kind] with weights drawn from torch's generator seeded by `seed` (float32, CPU, eval mode)."""
    if kind not in PIPELINES:
        raise ValueError(f"unknown tiny pipeline {kind!r}; expected one of {', '.join(PIPELINES)}")
    with torch.random.fork_rng(devices=[]):  # deterministic without touching the caller's RNG
        torch.manual_seed(seed)
        pipe = PIPELINES[kind]()
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe


def save_tiny_pipeline(kind: str, folder: str | None = None, seed: int = 0) -> str:
    """Write tiny_pipeline(kind, seed) to `folder` (a new temp dir if None) for load_policy(family, folder)."""
    folder = folder or tempfile.mkdtemp(prefix=f"tiny-{kind}-")
    tiny_pipeline(kind, seed).save_pretrained(folder)
    return folder
