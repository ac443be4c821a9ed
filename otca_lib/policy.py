"""Policy interface over diffusers flow-matching pipelines (SD3, Flux, Wan).

The sampler and the GRPO trainer only see `Policy`; the three adapters below hide
how each diffusers family wants its inputs.

Notation (rectified flow, as in diffusers' FlowMatchEulerDiscreteScheduler):
    x_s = (1 - s) * x0 + s * noise,  s = sigma in [0, 1], s = 1 is pure noise,
    v   = noise - x0, the velocity the transformer predicts,
so one Euler step from s to s' < s is  x_{s'} = x_s + (s' - s) * v.

Latents are always kept *unpacked*: images (B, C, H, W), videos (B, C, F, H, W),
with H, W the latent (VAE-downsampled) size. Conditioning is a dict of
batch-first tensors from `encode_prompts`, so generic code can cat/index it.

`load_policy(family, model)` builds a policy from a hub id or a local folder;
the model names "tiny-sd3", "tiny-flux", "tiny-wan", "tiny-sd3-pixel" build tiny random pipelines
of the real classes, offline, for tests and CPU demos (tiny.py).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from peft import LoraConfig

from .checksums import SUMS, first_mismatch
from .seeds import Stream, sample_seed
from .tiny import TINY_MODELS, tiny_pipeline

# Default LoRA targets (each family's `lora_targets`): the attention projections, plus the joint-attention
# context projections of SD3/Flux and, for Wan, the feed-forward layers; names checked against the diffusers classes.
_JOINT_ATTN = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
_FAMILY_OF_TRANSFORMER = {SD3Transformer2DModel: "sd3", FluxTransformer2DModel: "flux", WanTransformer3DModel: "wan"}  # + WanExperts below


def _shift_mu(scheduler, image_seq_len: int) -> float:
    """Resolution-dependent shift for schedulers with use_dynamic_shifting, with the arguments
    FluxPipeline / StableDiffusion3Pipeline pass (their two calculate_shift copies are identical)."""
    c = scheduler.config
    return calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)


class Policy:
    """Base class; the three adapters subclass it.

    `self.transformer` is what `velocity` calls and may be replaced by the trainer
    with a wrapped module (DDP, accelerate), so everything else (dtype, adapters,
    parameters, checkpoints) reads `self.unwrapped`, the module as built, and
    `self.config`, the transformer config copied at construction.
    """

    family: str
    is_video = False
    # T5 / UMT5 tokens every prompt is padded to: the pipeline's __call__ default for the real checkpoints,
    # or the number a model pretrained here was trained with (its pretrain.json). SD3 without a T5 appends
    # this many zero tokens, so it changes what the transformer is conditioned on, not only its cost.
    max_sequence_length: int

    def __init__(self, pipeline, keep_reference: bool = True, denoiser: torch.nn.Module | None = None,
                 max_sequence_length: int | None = None):
        # denoiser: what predicts (default pipeline.transformer; Wan 2.2's two experts as one WanExperts)
        if max_sequence_length is not None:
            self.max_sequence_length = int(max_sequence_length)
        self.pipeline = pipeline
        self.transformer = denoiser if denoiser is not None else pipeline.transformer
        self.unwrapped = self.transformer
        self.config = copy.deepcopy(self.unwrapped.config)
        self.num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
        for name, module in pipeline.components.items():
            if isinstance(module, torch.nn.Module):
                module.eval()  # no dropout anywhere: rollouts must be reproducible
                if name not in ("transformer", "transformer_2"):
                    module.requires_grad_(False)
        # Full fine-tuning needs a frozen copy of the initial weights as reference;
        # with LoRA the reference is the same model with the adapter switched off.
        self._reference = None
        if keep_reference and not self.has_lora:
            self._reference = copy.deepcopy(self.unwrapped).requires_grad_(False)
        self._in_reference = False

    @property
    def has_lora(self) -> bool:
        return bool(getattr(self.unwrapped, "peft_config", None))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unwrapped.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference(self):
        """Inside the block, `velocity` is the reference policy (LoRA off, or the frozen copy)."""
        lora = self.has_lora
        if not lora and self._reference is None:
            raise RuntimeError(
                "No reference policy: the model has no LoRA adapter and was built with "
                "keep_reference=False, so there is no frozen copy of the initial weights."
            )
        # diffusers/peft toggle requires_grad when switching adapters: restore it exactly.
        flags = [(p, p.requires_grad) for p in self.unwrapped.parameters()] if lora else []
        if lora:
            self.unwrapped.disable_adapters()
        self._in_reference = True
        try:
            yield
        finally:
            self._in_reference = False
            if lora:
                self.unwrapped.enable_adapters()
            for p, flag in flags:
                p.requires_grad_(flag)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        """v(x_sigma, sigma | cond) as float32 with x's shape; sigma is [B] (or a scalar) in [0, 1]."""
        model = self.transformer
        if self._in_reference:
            # The reference is never trained: call the unwrapped module (LoRA disabled) or
            # the frozen copy directly, so a DDP wrapper never sees a forward without grads.
            model = self.unwrapped if self.has_lora else self._reference
        dtype = self.unwrapped.dtype
        # The model runs in its own dtype (e.g. bf16) while the sampler keeps float32
        # states; sigma stays float32 because the timestep embedding casts it itself.
        sigma = sigma.to(device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        cond = {k: v.to(device=x.device, dtype=dtype) for k, v in cond.items()}
        v = self._forward(model, x.to(dtype), sigma, cond)
        return v.float()

    def guided_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, uncond: dict | None = None,
                        guidance_scale: float = 1.0) -> torch.Tensor:
        """The velocity with classifier-free guidance, v_u + g (v_c - v_u), when uncond is given and g != 1.

        Both halves run in one batched transformer call. x (B, *L); sigma [B]; returns float32 (B, *L).
        """
        if uncond is None or guidance_scale == 1.0:
            return self.velocity(x, sigma, cond)
        both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        v_c, v_u = self.velocity(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        return v_u + guidance_scale * (v_c - v_u)

    def _forward(self, model, x, sigma, cond) -> torch.Tensor:
        raise NotImplementedError

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def latent_shape(self, height: int, width: int, frames: int | None = None) -> tuple[int, ...]:
        raise NotImplementedError

    def size_rules(self) -> tuple[int, int | None]:
        """(m, largest): heights and widths must be positive multiples of m pixels (VAE factor x patch size),
        at most `largest` (None: no limit)."""
        raise NotImplementedError

    def check_size(self, height: int, width: int, frames: int | None = None) -> None:
        """ValueError, naming sizes that work, when the model cannot take height x width (x frames)."""
        m, largest = self.size_rules()
        bad = {n: v for n, v in (("height", height), ("width", width))
               if v < m or v % m or (largest is not None and v > largest)}
        if bad:
            fix = f"positive multiples of {m} px" + (f" up to {largest}" if largest else "")
            near = ", ".join(f"{n}={max(m, min(v // m * m, largest or v))}" for n, v in bad.items())
            raise ValueError(f"the {self.family} model takes heights and widths that are {fix} (VAE factor x patch "
                             f"size); got {', '.join(f'{n} {v}' for n, v in bad.items())}: set e.g. {near}")

    def _set_timesteps(self, num_steps: int, height: int, width: int) -> None:
        self.pipeline.scheduler.set_timesteps(num_steps)

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        """float32 [num_steps + 1], from 1-ish down to 0: the pipeline's own schedule."""
        self._set_timesteps(num_steps, height, width)
        return self.pipeline.scheduler.sigmas.to("cpu", torch.float32).clone()

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Image latents (B, C, H, W) -> pixels (B, 3, f*H, f*W) in [0, 1], float32 (f = VAE factor)."""
        vae = self.pipeline.vae
        if vae is None:  # pixel-space model: the state is the image itself, in [-1, 1]
            return (x.float() / 2 + 0.5).clamp(0, 1)
        # Inverse of the encoder-side normalisation, as the pipelines do before vae.decode.
        z = x.to(vae.device, vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        image = vae.decode(z, return_dict=False)[0]  # [-1, 1]
        return (image.float() / 2 + 0.5).clamp(0, 1)


class SD3Policy(Policy):
    family = "sd3"
    pipeline_class = StableDiffusion3Pipeline
    lora_targets = _JOINT_ATTN
    max_sequence_length = 256

    @torch.no_grad()
    def encode_prompts(self, prompts):
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        # embeds: (B, 77 + T5 tokens, joint_attention_dim), pooled: (B, pooled_projection_dim)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _forward(self, model, x, sigma, cond):
        # SD3 is trained with timestep = sigma * 1000 (the scheduler's `timesteps`).
        return model(
            hidden_states=x, timestep=sigma * self.num_train_timesteps,
            encoder_hidden_states=cond["prompt_embeds"], pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]

    def latent_shape(self, height, width, frames=None):
        f = self.pipeline.vae_scale_factor if self.pipeline.vae is not None else 1  # 1: pixel space
        return (self.config.in_channels, height // f, width // f)

    def size_rules(self):
        f = self.pipeline.vae_scale_factor if self.pipeline.vae is not None else 1
        m = f * self.config.patch_size
        limit = self.config.get("pos_embed_max_size")  # SD3's learned positions cover this many patches a side
        return m, (m * limit if limit else None)

    def _set_timesteps(self, num_steps, height, width):
        # SD3.5 checkpoints use a fixed shift; a scheduler with dynamic shifting gets mu
        # from the patch-token count, as StableDiffusion3Pipeline computes it.
        scheduler, mu = self.pipeline.scheduler, None
        if scheduler.config.use_dynamic_shifting:
            _, h, w = self.latent_shape(height, width)
            mu = _shift_mu(scheduler, (h // self.config.patch_size) * (w // self.config.patch_size))
        scheduler.set_timesteps(num_steps, mu=mu)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """Flux token layout: (B, C, H, W) -> (B, H/2 * W/2, 4C), one token per 2x2 patch."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, H/2, W/2, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack_latents` for a latent size (height, width)."""
    b, _, d = tokens.shape
    x = tokens.view(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, H/2, 2, W/2, 2)
    return x.reshape(b, d // 4, height, width)


class FluxPolicy(Policy):
    family = "flux"
    pipeline_class = FluxPipeline
    lora_targets = _JOINT_ATTN
    max_sequence_length = 512
    guidance_scale = 3.5  # FluxPipeline's default distilled guidance (guidance_embeds models only)

    def __init__(self, pipeline, keep_reference=True, denoiser=None, max_sequence_length=None):
        super().__init__(pipeline, keep_reference, denoiser, max_sequence_length)
        self._img_ids: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def encode_prompts(self, prompts):
        # txt_ids are all zeros and shared by the batch: rebuilt in _forward, not stored.
        embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompts, prompt_2=None, max_sequence_length=self.max_sequence_length
        )
        # embeds: (B, T5 tokens, joint_attention_dim), pooled: (B, CLIP hidden size)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _image_ids(self, h, w, device, dtype):
        """(H/2 * W/2, 3) RoPE positions (0, row, col) of the packed tokens, cached per size."""
        key = (h, w, device, dtype)
        if key not in self._img_ids:
            rows = torch.arange(h // 2).repeat_interleave(w // 2)
            cols = torch.arange(w // 2).repeat(h // 2)
            ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1)
            self._img_ids[key] = ids.to(device=device, dtype=dtype)
        return self._img_ids[key]

    def _forward(self, model, x, sigma, cond):
        _, _, h, w = x.shape
        embeds = cond["prompt_embeds"]
        txt_ids = torch.zeros(embeds.shape[1], 3, device=x.device, dtype=x.dtype)
        guidance = None
        if self.config.guidance_embeds:
            guidance = torch.full_like(sigma, self.guidance_scale)
        # FluxPipeline passes timestep / 1000 = sigma; the model rescales by 1000 itself.
        tokens = model(
            hidden_states=pack_latents(x), timestep=sigma, guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=embeds,
            txt_ids=txt_ids, img_ids=self._image_ids(h, w, x.device, x.dtype), return_dict=False,
        )[0]
        return unpack_latents(tokens, h, w)

    def size_rules(self):
        return 2 * self.pipeline.vae_scale_factor, None  # 2 x 2 latent patches per token

    def latent_shape(self, height, width, frames=None):
        # Packing needs even latent sizes, hence the rounding the pipeline also does.
        f = self.pipeline.vae_scale_factor
        return (self.config.in_channels // 4, 2 * (height // (2 * f)), 2 * (width // (2 * f)))

    def _set_timesteps(self, num_steps, height, width):
        # FluxPipeline always passes explicit linear sigmas plus a resolution-dependent mu.
        _, h, w = self.latent_shape(height, width)
        mu = _shift_mu(self.pipeline.scheduler, (h // 2) * (w // 2))  # one token per 2x2 patch
        self.pipeline.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)


class WanPolicy(Policy):
    family = "wan"
    pipeline_class = WanPipeline
    lora_targets = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    is_video = True
    max_sequence_length = 512

    def __init__(self, pipeline, keep_reference=True, denoiser=None, max_sequence_length=None):
        if getattr(pipeline, "transformer_2", None) is not None and not isinstance(denoiser, WanExperts):
            raise ValueError("a two-expert Wan 2.2 pipeline needs its experts as one denoiser: build the policy with "
                             "policy_from_pipeline or load_policy")
        if not isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler):
            # Wan checkpoints ship UniPC in flow mode; the policy needs the plain Euler
            # flow schedule with the same shift.
            pipeline.scheduler = FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=pipeline.scheduler.config.num_train_timesteps,
                shift=pipeline.scheduler.config.get("flow_shift", 1.0),
            )
        super().__init__(pipeline, keep_reference, denoiser, max_sequence_length)

    @torch.no_grad()
    def encode_prompts(self, prompts):
        embeds, _ = self.pipeline.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                                max_sequence_length=self.max_sequence_length)
        return {"prompt_embeds": embeds}  # (B, T5 tokens, text_dim), zero past each prompt's length

    def _forward(self, model, x, sigma, cond):
        return model(
            hidden_states=x, timestep=sigma * self.num_train_timesteps,
            encoder_hidden_states=cond["prompt_embeds"], return_dict=False,
        )[0]

    def size_rules(self):
        fs = self.pipeline.vae_scale_factor_spatial if self.pipeline.vae is not None else 1
        m, limit = fs * self.config.patch_size[1], self.config.get("rope_max_seq_len")  # rotary positions per axis
        return m, (m * limit if limit else None)

    def check_size(self, height, width, frames=None):
        super().check_size(height, width)
        pt = self.config.patch_size[0]
        if self.pipeline.vae is None:
            ok, rule = frames is not None and frames >= pt and frames % pt == 0, f"a positive multiple of {pt}"
        else:
            ft = self.pipeline.vae_scale_factor_temporal
            ok = frames is not None and frames >= 1 and (frames - 1) % ft == 0 and ((frames - 1) // ft + 1) % pt == 0
            rule = f"1 + a multiple of {ft * pt}" if pt > 1 else f"1 + a multiple of {ft}"
        if not ok:
            raise ValueError(f"the {self.family} model takes frames = {rule}; got frames={frames}")

    def latent_shape(self, height, width, frames=None):
        if frames is None:
            raise ValueError("Wan is a video model: latent_shape needs `frames`")
        if self.pipeline.vae is None:  # pixel-space model: the state is the video itself
            return (self.config.in_channels, frames, height, width)
        ft, fs = self.pipeline.vae_scale_factor_temporal, self.pipeline.vae_scale_factor_spatial
        return (self.config.in_channels, (frames - 1) // ft + 1, height // fs, width // fs)

    @torch.no_grad()
    def decode(self, x):
        """Video latents (B, C, F, H, W) -> pixels (B, 3, frames, f*H, f*W) in [0, 1], float32."""
        vae = self.pipeline.vae
        if vae is None:  # pixel-space model: the state is the video itself, in [-1, 1]
            return (x.float() / 2 + 0.5).clamp(0, 1)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(vae.device, vae.dtype)
        std = torch.tensor(vae.config.latents_std).view(shape).to(vae.device, vae.dtype)
        z = x.to(vae.device, vae.dtype) * std + mean  # per-channel de-normalisation
        video = vae.decode(z, return_dict=False)[0]  # (B, 3, frames, H, W) in [-1, 1]
        return (video.float() / 2 + 0.5).clamp(0, 1)


class WanExperts(torch.nn.Module):
    """Wan 2.2's two experts as one denoiser: `high` predicts at timesteps t >= boundary, `low` below it, as
    WanPipeline switches from `transformer` to `transformer_2` at boundary_ratio x num_train_timesteps.
    The switch is per sample, so one batch (e.g. an update micro-batch of random steps) may use both.
    LoRA adapters, gradient checkpointing and the reference switch (adapters off) apply to both experts."""

    def __init__(self, high: WanTransformer3DModel, low: WanTransformer3DModel, boundary_timestep: float):
        super().__init__()
        self.high, self.low, self.boundary = high, low, float(boundary_timestep)
        self.config = high.config

    dtype = property(lambda self: self.high.dtype)
    device = property(lambda self: self.high.device)
    peft_config = property(lambda self: getattr(self.high, "peft_config", None))

    def add_adapter(self, config) -> None:
        self.high.add_adapter(config)
        self.low.add_adapter(copy.deepcopy(config))

    def disable_adapters(self) -> None:
        self.high.disable_adapters(), self.low.disable_adapters()

    def enable_adapters(self) -> None:
        self.high.enable_adapters(), self.low.enable_adapters()

    def enable_gradient_checkpointing(self) -> None:
        self.high.enable_gradient_checkpointing(), self.low.enable_gradient_checkpointing()

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        high = timestep >= self.boundary                                   # [B]
        out = hidden_states.new_empty(hidden_states.shape)
        for mask, expert in ((high, self.high), (~high, self.low)):
            if mask.any():
                out[mask] = expert(hidden_states=hidden_states[mask], timestep=timestep[mask],
                                   encoder_hidden_states=encoder_hidden_states[mask], return_dict=False)[0]
        return (out,)


class X0Prediction:
    """For a transformer trained to predict the clean sample x0 instead of the velocity (both ShapesWorld models:
    in pixel space a tiny transformer cannot copy the noise a velocity contains, so its samples keep it; the
    argument of Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"). Rectified flow
    x_s = (1 - s) x0 + s e turns the prediction into a velocity

        v = e - x0 = (x_s - x0_theta) / s          (s > 0 at every step the sampler evaluates)

    so everything downstream (SDE steps, log-probs, x0_hat = x - s v = x0_theta) is unchanged."""

    def _forward(self, model, x, sigma, cond):
        x0 = super()._forward(model, x, sigma, cond)
        # fp32: the division by s (as small as 1 / num_steps) would amplify bf16 rounding.
        return (x.float() - x0.float()) / sigma.float().view(-1, *[1] * (x.ndim - 1))


class SD3X0Policy(X0Prediction, SD3Policy):
    """The ShapesWorld image model: a pixel-space SD3 transformer predicting x0."""
    family = "sd3-x0"


class WanX0Policy(X0Prediction, WanPolicy):
    """The ShapesWorld video model: its (8, 4, 4) patches give each token 384 outputs from a width of 128."""
    family = "wan-x0"


_FAMILY_OF_TRANSFORMER[WanExperts] = "wan"
# family -> policy class; its pipeline class and LoRA targets (the x0 families inherit their base family's)
POLICIES = {c.family: c for c in (SD3Policy, FluxPolicy, WanPolicy, SD3X0Policy, WanX0Policy)}
FAMILIES = tuple(POLICIES)
PIPELINES = {f: c.pipeline_class for f, c in POLICIES.items()}
DEFAULT_LORA_TARGETS = {f: c.lora_targets for f, c in POLICIES.items()}


def _absent_components(family: str, model: str) -> dict:
    """A local folder saved without some components (the pixel-space ShapesWorld models have no VAE and
    no T5) lists them as [null, null] in model_index.json; from_pretrained needs them passed as None."""
    folder = Path(model)
    if not (folder / "model_index.json").exists():
        return {}
    listed = json.loads((folder / "model_index.json").read_text())
    params = inspect.signature(PIPELINES[family].__init__).parameters
    return {name: None for name, p in params.items() if name != "self" and p.default is inspect.Parameter.empty
            and listed.get(name, [None, None]) == [None, None]}


# Files that can run code when loaded (pickles, Python modules): a model folder is data, read as safetensors and
# JSON only (tokenizers: JSON, or a SentencePiece protobuf), so any of these is refused before loading starts.
CODE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".py", ".pyc")


def refuse_code_files(folder: Path) -> None:
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in CODE_SUFFIXES)
    if found:
        raise ModelNotAvailable(f"{folder} holds files that can run code when loaded ({', '.join(found[:3])}"
                                f"{', ...' if len(found) > 3 else ''}): only .safetensors weights and JSON configs are "
                                "read from a model folder; convert the weights to safetensors and remove custom code")


def verify_sha256sums(folder: Path) -> None:
    """Check every file listed in folder/SHA256SUMS; raise ModelNotAvailable naming the first bad one."""
    bad = first_mismatch(folder)
    if bad is not None:
        raise ModelNotAvailable(f"{bad} is missing or does not match {folder / SUMS}: the model folder is corrupt or "
                                "was changed; restore it (git checkout -- data/models) or re-run the pretraining command")


def pretrained_text_tokens(folder: Path, family: str) -> int | None:
    """The text tokens a model pretrained here was trained with (its pretrain.json), None for other folders.

    pretrain.json also records the family; loading the model as another one (an x0-predicting ShapesWorld
    model read as velocities) would sample garbage without any error, so that is a ValueError, as is a
    pretrain.json that does not say how many text tokens the model saw (sampling with another number
    conditions the model on padding it never saw: SD3 without T5 appends that many zero tokens)."""
    meta = folder / "pretrain.json"
    if not meta.exists():
        return None
    record = json.loads(meta.read_text())
    trained_as = record.get("family")
    if trained_as not in (None, family):
        raise ValueError(f"{folder} was pretrained as family {trained_as!r} (its pretrain.json); load it with "
                         f"family={trained_as!r}, not {family!r}")
    tokens = record.get("max_sequence_length")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"{meta} does not record max_sequence_length, the text tokens the model was pretrained "
                         f"with (otca_lib.pretrain.MAX_TOKENS for ShapesWorld models); add it, or re-run the "
                         "pretraining command, which writes it")
    return tokens


class ModelNotAvailable(RuntimeError):
    """The weights of a model id / folder cannot be loaded here (offline, or an incomplete folder)."""



def add_lora(transformer, rank: int, alpha: float | None = None, target_modules: list[str] | None = None,
             seed: int = 0):
    """Attach a LoRA adapter (peft, via diffusers' add_adapter); only its weights stay trainable.

    LoRA A is random (Kaiming): it is drawn from the stream (seed, LORA_INIT) so that a run does not depend
    on the global RNG or on the number of processes, and does not repeat the draws that initialised a tiny
    model's own weights (tiny_pipeline seeds the same generator type with the plain seed).
    """
    if target_modules is None:
        target_modules = DEFAULT_LORA_TARGETS[_FAMILY_OF_TRANSFORMER[type(transformer)]]
    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=True, target_modules=target_modules)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(seed, Stream.LORA_INIT))
        transformer.add_adapter(config)  # LoRA B = 0: the model is unchanged until trained
    return transformer


def load_policy(
    family: str,
    model: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    lora_targets: list[str] | None = None,
    keep_reference: bool = True,
) -> Policy:
    """Load `model` (hub id, local folder or "tiny-<family>") as a Policy of `family`."""
    if family not in POLICIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    text_tokens = None  # the family's default, unless a model pretrained here records its own
    if model in TINY_MODELS:
        if TINY_MODELS[model] != family:
            raise ValueError(f"{model!r} is not a model of family {family!r} (use 'tiny-{family}')")
        pipeline = tiny_pipeline(model.removeprefix("tiny-"))
        if dtype != torch.float32:  # (diffusers warns on any .to(dtype); tiny models only)
            pipeline.to(dtype=dtype)
    else:
        # Wan's VAE is meant to run in float32 whatever the transformer dtype (diffusers examples).
        dtypes = {"default": dtype, "vae": torch.float32} if POLICIES[family].is_video else dtype
        # a path, not a hub id ('org/name'), that is not there: say so (not "the hub is unreachable")
        if (Path(model).is_absolute() or model.startswith(".") or model.count("/") > 1) and not Path(model).is_dir():
            shipped = ("data/README.md lists the shipped ShapesWorld models and the `python -m otca_lib.pretrain ...` "
                       "command that makes each; to use another folder, pass --set model=DIR to otca_lib.train, or "
                       "--model DIR to the bench scripts" if "data/models/" in model else
                       "a local model is a folder written by save_pretrained")
            raise ModelNotAvailable(f"the model folder {model!r} does not exist. {shipped}")
        if Path(model, "model_index.json").exists():  # a local folder: checked before anything is loaded
            refuse_code_files(Path(model))
            verify_sha256sums(Path(model))
            text_tokens = pretrained_text_tokens(Path(model), family)
        absent = _absent_components(family, model)
        try:
            # use_safetensors: weights are never unpickled, local folder or hub
            pipeline = PIPELINES[family].from_pretrained(model, dtype=dtypes, use_safetensors=True, **absent)
        except (OSError, ValueError) as err:  # huggingface_hub errors are OSErrors
            raise ModelNotAvailable(
                f"Could not load {model!r} (family {family}): the weights are not in the local cache and "
                "the hub is unreachable (HF_HUB_OFFLINE=1?), or the folder is incomplete. Download them on "
                f"a machine with network (huggingface-cli download {model} --local-dir DIR) and pass the "
                f"folder: --set model=DIR  [{type(err).__name__}: {err}]"
            ) from err
        if getattr(pipeline, "transformer", None) is None:
            raise ModelNotAvailable(f"{model!r} has no transformer: the folder is incomplete (model_index.json must "
                                    "list one, saved with save_pretrained)")
    return policy_from_pipeline(family, pipeline, device=device, lora_rank=lora_rank, lora_alpha=lora_alpha,
                                lora_targets=lora_targets, keep_reference=keep_reference,
                                max_sequence_length=text_tokens)


def policy_from_pipeline(family: str, pipeline, *, device="cpu", lora_rank: int = 0, lora_alpha: float | None = None,
                         lora_targets: list[str] | None = None, keep_reference: bool = True,
                         max_sequence_length: int | None = None) -> Policy:
    """Wrap an already built pipeline (moved to `device`, with a LoRA adapter if lora_rank > 0) as a Policy.
    A Wan 2.2 pipeline with two experts (transformer_2 and boundary_ratio) is trained as one WanExperts.
    max_sequence_length: the text tokens prompts are padded to (default: the family's pipeline default)."""
    pipeline.to(device)
    denoiser = pipeline.transformer
    if getattr(pipeline, "transformer_2", None) is not None:
        if pipeline.config.boundary_ratio is None:
            raise ValueError("a Wan pipeline with transformer_2 needs boundary_ratio (where the experts switch)")
        denoiser = WanExperts(pipeline.transformer, pipeline.transformer_2,
                              pipeline.config.boundary_ratio * pipeline.scheduler.config.num_train_timesteps)
    if lora_rank > 0:
        add_lora(denoiser, lora_rank, lora_alpha, lora_targets)
        # The adapter is trained in fp32 whatever the frozen weights' dtype: AdamW updates of
        # bf16 weights round away (peft runs the LoRA branch in its own dtype and casts back).
        for p in denoiser.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return POLICIES[family](pipeline, keep_reference=keep_reference, denoiser=denoiser,
                            max_sequence_length=max_sequence_length)
