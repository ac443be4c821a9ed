"""Model-based rewards: CLIP score, PickScore, LAION aesthetic, HPSv2.1, ImageReward, and video rewards.

Each is ``fn(pixels, prompts) -> [B] float32`` on ``pixels.device`` (rewards.py); image rewards score a
video (B, 3, F, H, W) as the mean over its frames. Importing loads nothing (transformers is imported inside
the factories); a loaded backbone is cached and shared (one CLIP ViT-L/14 serves clip_score, aesthetic and
the video rewards). Weights come from a *source* (SOURCES): the ``source=`` argument, else ``$OTCA_<KEY>``,
else the public hub default; a local folder or file works everywhere a hub id does. Offline and uncached,
loading raises :class:`RewardModelUnavailable` naming the id and the local-folder route (docs/rewards.md).
Preprocessing is on tensors (no PIL): bicubic antialiased shortest-side resize, centre crop, mean / std.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# source key -> (environment variable, public default). "repo:file" names one file of a hub repo.
SOURCES = {
    "clip": ("OTCA_CLIP", "openai/clip-vit-large-patch14"),
    "pickscore": ("OTCA_PICKSCORE", "yuvalkirstain/PickScore_v1"),
    "clip_h_processor": ("OTCA_CLIP_H_PROCESSOR", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    "aesthetic_head": ("OTCA_AESTHETIC_HEAD",
                       "camenduru/improved-aesthetic-predictor:sac+logos+ava1-l14-linearMSE.pth"),
    "hpsv21": ("OTCA_HPSV21", "xswu/HPSv2:HPS_v2.1_compressed.pt"),
    "imagereward": ("OTCA_IMAGEREWARD", "THUDM/ImageReward:ImageReward.pt"),
    "bert_tokenizer": ("OTCA_BERT_TOKENIZER", "google-bert/bert-base-uncased"),
}


class RewardModelUnavailable(RuntimeError):
    """A reward model's weights (or tokenizer / processor files) cannot be found locally or on the hub."""


def resolve_source(key: str, source: str | None = None) -> str:
    """The explicit ``source``, else ``$OTCA_<KEY>``, else the public default."""
    env, default = SOURCES[key]
    return str(source or os.environ.get(env) or default)


def _unavailable(key: str, ident: str, err: Exception) -> RewardModelUnavailable:
    env, _ = SOURCES[key]
    if os.path.exists(ident) or ident.startswith(("/", ".", "~")):
        return RewardModelUnavailable(f"cannot load {key!r} from the local path {ident!r}: {err}")
    repo, _, fname = ident.partition(":")
    cmd = f"huggingface-cli download {repo}{' ' + fname if fname else ''} --local-dir DIR"
    return RewardModelUnavailable(
        f"the weights of {ident!r} (source {key!r}) are not in the local Hugging Face cache and the hub cannot be "
        f"reached (offline: HF_HUB_OFFLINE=1 or no network). On a machine with network run `{cmd}` (newer "
        f"huggingface_hub: `hf download`), copy DIR here "
        f"and pass the folder: `export {env}=DIR` for the registered rewards, or "
        f"`build_reward(name, source=DIR)` in Python. Underlying error: {type(err).__name__}: {str(err)[:200]}")


def _load_or_explain(key: str, ident: str, loader: Callable):
    try:
        return loader(ident)
    except (OSError, ValueError) as e:  # hub / cache misses are OSError; a bad local folder may be either
        raise _unavailable(key, ident, e) from e


def _resolve_file(key: str, ident: str) -> str:
    """A local file for a single-file source: the file itself, a file in a folder, or a hub download."""
    default_name = SOURCES[key][1].partition(":")[2]
    if os.path.isfile(ident):
        return ident
    if os.path.isdir(ident):
        cands = [default_name] if os.path.isfile(os.path.join(ident, default_name)) else sorted(
            f for f in os.listdir(ident) if f.endswith((".pt", ".pth", ".bin", ".safetensors")))
        if len(cands) != 1:
            err = FileNotFoundError(f"want {default_name!r} or one weights file, found {cands}")
            raise _unavailable(key, ident, err)
        return os.path.join(ident, cands[0])
    from huggingface_hub import hf_hub_download
    repo, _, fname = ident.partition(":")
    return _load_or_explain(key, ident, lambda _: hf_hub_download(repo, fname or default_name))


def load_state_dict_file(path: str) -> dict:
    """Tensors of a .safetensors / .pt / .pth / .bin file; unwraps {'state_dict': ...} and a 'module.' prefix."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    return {k.removeprefix("module."): v for k, v in sd.items() if torch.is_tensor(v)}


# ----------------------------------------------------------------------------------------------- preprocessing
def preprocess(pixels: torch.Tensor, size: int, crop: int, mean=OPENAI_MEAN, std=OPENAI_STD,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> model input (N, 3, crop, crop): shortest side to ``size`` (bicubic,
    antialiased, the long side floored as transformers' processors do), centre crop, (x - mean) / std."""
    x = pixels.float().clamp(0, 1)
    h, w = x.shape[-2:]
    if min(h, w) != size:
        nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2  # crop <= size in every CLIP / BLIP config
    x = x[..., top:top + crop, left:left + crop]
    m, s = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
    return ((x - m) / s).to(dtype)


def _image_settings(ident: str) -> dict:
    """size / crop / mean / std from a folder's or hub repo's preprocessor_config.json."""
    from transformers.image_processing_utils import ImageProcessingMixin
    cfg = ImageProcessingMixin.get_image_processor_dict(ident)[0]
    size, crop = cfg.get("size", 224), cfg.get("crop_size", cfg.get("size", 224))
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    return dict(size=int(size), crop=int(crop), mean=tuple(cfg.get("image_mean", OPENAI_MEAN)),
                std=tuple(cfg.get("image_std", OPENAI_STD)))


def _as_images(pixels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, 3, H, W) or (B, 3, F, H, W) -> ((B*F, 3, H, W), F)."""
    if pixels.ndim == 4:
        return pixels, 1
    return pixels.transpose(1, 2).flatten(0, 1), pixels.shape[2]


def _default_dtype(device: torch.device, dtype):
    return dtype or (torch.float16 if torch.device(device).type == "cuda" else torch.float32)


_BACKBONES: dict = {}  # loaded backbones; clear() it to free them


def _cached(key, make):
    if key not in _BACKBONES:
        _BACKBONES[key] = make()
    return _BACKBONES[key]


# ------------------------------------------------------------------------------------------ CLIP-style scorers
class ClipEmbedder:
    """A transformers CLIPModel with its tokenizer and tensor preprocessing; unit-norm float32 embeddings."""

    def __init__(self, model, tokenizer, settings: dict, chunk: int = 32):
        self.model, self.tokenizer, self.settings, self.chunk = model, tokenizer, settings, chunk
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for part in images.split(self.chunk):
            x = preprocess(part.to(self.device), dtype=self.dtype, **self.settings)
            out.append(self.model.get_image_features(pixel_values=x).pooler_output.float())
        return F.normalize(torch.cat(out), dim=-1)

    def text_embeds(self, prompts: list) -> torch.Tensor:
        """[B, E], each distinct prompt encoded once."""
        uniq = list(dict.fromkeys(prompts))
        tok = self.tokenizer(uniq, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        emb = self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask).pooler_output
        emb = F.normalize(emb.float(), dim=-1)
        return emb[torch.tensor([uniq.index(p) for p in prompts], device=emb.device)]


def _frozen_on(model, device, dtype):
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _has_processor_files(folder: str) -> bool:
    return os.path.isdir(folder) and os.path.isfile(os.path.join(folder, "preprocessor_config.json")) and any(
        os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "vocab.json"))


def load_clip(key: str = "clip", source: str | None = None, processor_source: str | None = None,
              device="cpu", dtype=None, processor_key: str | None = None) -> ClipEmbedder:
    """A CLIPModel folder / hub id. Tokenizer and image settings come from ``processor_source``, else the
    model folder when it has them, else the ``processor_key`` source (PickScore: the LAION ViT-H-14 repo)."""
    from transformers import AutoTokenizer, CLIPModel
    device, dtype = torch.device(device), _default_dtype(device, dtype)
    ident = resolve_source(key, source)
    if processor_source is None and processor_key is not None and not _has_processor_files(ident):
        pkey, pident = processor_key, resolve_source(processor_key)
    else:
        pkey, pident = (processor_key or key), (processor_source or ident)

    def make():
        model = _load_or_explain(key, ident, lambda s: CLIPModel.from_pretrained(s, dtype=dtype))
        tok = _load_or_explain(pkey, pident, AutoTokenizer.from_pretrained)
        return ClipEmbedder(_frozen_on(model, device, dtype), tok, _load_or_explain(pkey, pident, _image_settings))
    return _cached(("clip", key, ident, pident, str(device), dtype), make)


def _image_score_to_reward(score: Callable[[torch.Tensor, list], torch.Tensor]):
    """Lift a per-image score [N] to the rewards interface: a video scores the mean over its frames."""
    def fn(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
        frames, f = _as_images(pixels)
        per = score(frames, [p for p in prompts for _ in range(f)])
        return per.view(-1, f).mean(1).float().to(pixels.device)
    return fn


def clip_score(device="cpu", dtype=None, source=None, processor_source=None):
    """Cosine similarity (raw, not x100) of CLIP ViT-L/14 image and prompt embeddings, in [-1, 1]; ~0.15-0.40."""
    clip = load_clip("clip", source, processor_source, device, dtype)
    return _image_score_to_reward(lambda x, p: (clip.image_embeds(x) * clip.text_embeds(p)).sum(-1))


def pickscore(device="cpu", dtype=None, source=None, processor_source=None):
    """PickScore v1: logit_scale (~100) x cosine of the fine-tuned CLIP-H embeddings; ~18-24 for typical images."""
    clip = load_clip("pickscore", source, processor_source, device, dtype, processor_key="clip_h_processor")
    scale = float(clip.model.logit_scale.exp())
    return _image_score_to_reward(lambda x, p: scale * (clip.image_embeds(x) * clip.text_embeds(p)).sum(-1))


# ------------------------------------------------------------------------------------------------- aesthetic
class AestheticHead(nn.Module):
    """The MLP of the LAION "improved aesthetic predictor" (and of ImageReward's head): five Linear layers
    768 -> 1024 -> 128 -> 64 -> 16 -> 1 with dropouts and no activations; keys ``layers.{0,2,4,6,7}``."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


def load_aesthetic_head(source=None, device="cpu") -> AestheticHead:
    ident = resolve_source("aesthetic_head", source)

    def make():
        sd = load_state_dict_file(_resolve_file("aesthetic_head", ident))
        head = AestheticHead(sd["layers.0.weight"].shape[1])
        head.load_state_dict(sd)
        return _frozen_on(head, device, torch.float32)
    return _cached(("aesthetic", ident, str(device)), make)


def aesthetic(device="cpu", dtype=None, source=None, clip_source=None):
    """LAION aesthetic score (~1-10): the MLP on the unit-norm CLIP ViT-L/14 image embedding (fp32 head)."""
    clip, head = load_clip("clip", clip_source, None, device, dtype), load_aesthetic_head(source, device)
    return _image_score_to_reward(lambda x, p: head(clip.image_embeds(x)))


# --------------------------------------------------------------------------------------------------- HPSv2.1
def vit_h14_config():
    """transformers CLIPConfig of open_clip's ViT-H-14 (the HPSv2 / PickScore / LAION backbone)."""
    from transformers import CLIPConfig
    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                           image_size=224, patch_size=14, hidden_act="gelu"),
        projection_dim=1024)


_OC_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
_OC_TOP = {"visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
           "positional_embedding": "text_model.embeddings.position_embedding.weight", "logit_scale": "logit_scale"}
_OC_NORMS = {"visual.ln_pre.": "vision_model.pre_layrnorm.", "visual.ln_post.": "vision_model.post_layernorm.",
             "ln_final.": "text_model.final_layer_norm."}


def open_clip_to_hf_clip(sd: dict) -> dict:
    """Rename an open_clip CLIP state dict (ViT towers, e.g. ViT-H-14) to transformers CLIPModel keys: the fused
    attention in_proj is split into q / k / v (rows in that order), ``proj`` / ``text_projection`` (applied as
    x @ P in open_clip) become Linear weights P^T, ln_pre / ln_post / ln_final become pre_layrnorm /
    post_layernorm / final_layer_norm. Unknown keys raise ValueError."""
    out = {}
    for k, v in sd.items():
        if k in _OC_TOP:
            out[_OC_TOP[k]] = v
        elif k == "visual.proj":
            out["visual_projection.weight"] = v.t().contiguous()
        elif k == "text_projection":
            out["text_projection.weight"] = v.t().contiguous()
        elif k == "text_projection.weight":
            out[k] = v
        elif k.endswith("attn_mask"):
            continue
        elif any(k.startswith(p) for p in _OC_NORMS):
            p = next(p for p in _OC_NORMS if k.startswith(p))
            out[_OC_NORMS[p] + k[len(p):]] = v
        elif ".transformer.resblocks." in "." + k:
            tower, _, rest = ("." + k).partition(".transformer.resblocks.")
            i, _, name = rest.partition(".")
            pre = f"{'vision_model' if tower == '.visual' else 'text_model'}.encoder.layers.{i}."
            if name.startswith("attn.in_proj_"):
                for part, t in zip("qkv", v.chunk(3, dim=0)):
                    out[pre + f"self_attn.{part}_proj.{name.rpartition('_')[2]}"] = t.contiguous()
                continue
            base, _, leaf = name.rpartition(".")
            if base not in _OC_BLOCK:
                raise ValueError(f"unknown open_clip key {k!r}")
            out[pre + _OC_BLOCK[base] + "." + leaf] = v
        else:
            raise ValueError(f"unknown open_clip key {k!r}")
    return out


def _from_state_dict(cls, config, sd: dict, what: str):
    """``cls(config)`` built without random init, then filled strictly from ``sd`` (position_ids may be absent)."""
    from transformers.initialization import no_init_weights
    with no_init_weights():
        model = cls(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if not m.endswith("position_ids")]:
        raise ValueError(f"{what} checkpoint does not fit the config: missing {missing}, unexpected {unexpected}")
    return model


def load_hpsv21(source=None, processor_source=None, device="cpu", dtype=None, config=None) -> ClipEmbedder:
    """HPSv2.1: an open_clip ViT-H-14 checkpoint (file, folder holding it, or hub "repo:file"), converted to a
    transformers CLIPModel; a folder with config.json is read as an already converted CLIPModel."""
    from transformers import AutoTokenizer, CLIPModel
    device, dtype = torch.device(device), _default_dtype(device, dtype)
    ident = resolve_source("hpsv21", source)
    pkey, pident = "clip_h_processor", resolve_source("clip_h_processor", processor_source)

    def make():
        if os.path.isfile(os.path.join(ident, "config.json")):
            model = _load_or_explain("hpsv21", ident, lambda s: CLIPModel.from_pretrained(s, dtype=dtype))
        else:
            sd = open_clip_to_hf_clip(load_state_dict_file(_resolve_file("hpsv21", ident)))
            model = _from_state_dict(CLIPModel, config or vit_h14_config(), sd, "HPS")
        tok = _load_or_explain(pkey, pident, AutoTokenizer.from_pretrained)
        return ClipEmbedder(_frozen_on(model, device, dtype), tok, _load_or_explain(pkey, pident, _image_settings))
    return _cached(("hps", ident, pident, str(device), dtype, id(config)), make)


def hpsv21(device="cpu", dtype=None, source=None, processor_source=None, config=None):
    """HPSv2.1: cosine of the unit-norm image and prompt embeddings (as HPS's own scorer), ~0.20-0.35."""
    hps = load_hpsv21(source, processor_source, device, dtype, config)
    return _image_score_to_reward(lambda x, p: (hps.image_embeds(x) * hps.text_embeds(p)).sum(-1))


# ---------------------------------------------------------------------------------------------- ImageReward
def imagereward_config(text_overrides: dict | None = None):
    """transformers BlipConfig of ImageReward's backbone: BLIP ViT-L/16 at 224 px + BERT-base with cross-attention."""
    from transformers import BlipConfig
    text = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu",
                is_decoder=True, pad_token_id=0)
    text.update(text_overrides or {})
    return BlipConfig(text_config=text, vision_config=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
        patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu"))


class ImageRewardModel(nn.Module):
    """ImageReward: BLIP ViT image tokens -> BERT prompt encoder cross-attending to them -> [CLS] -> MLP head,
    standardised with ImageReward's published mean / std (so ~N(0, 1) over its training images)."""
    MEAN, STD = 0.16717362830052426, 1.0333394966054072

    def __init__(self, config):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel
        config.text_config.encoder_hidden_size = config.vision_config.hidden_size
        self.vision = BlipVisionModel(config.vision_config)
        self.text = BlipTextModel(config.text_config, add_pooling_layer=False)
        self.head = AestheticHead(config.text_config.hidden_size)

    def forward(self, pixel_values, input_ids, attention_mask):
        img = self.vision(pixel_values=pixel_values).last_hidden_state
        txt = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=img,
                        encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long, device=img.device))
        return (self.head(txt.last_hidden_state[:, 0].float()) - self.MEAN) / self.STD


_BLIP_VIT = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
             "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
             "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
_BLIP_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
               "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def imagereward_to_hf(sd: dict) -> dict:
    """Rename an ImageReward.pt state dict (``blip.visual_encoder.*`` timm-style ViT, ``blip.text_encoder.*``
    BLIP med BERT, ``mlp.layers.*``) to :class:`ImageRewardModel` keys. The fused qkv has the same layout in
    both; BLIP's ITC projections (vision_proj / text_proj) are unused by ImageReward and dropped."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blip.visual_encoder."):
            name = k[len("blip.visual_encoder."):]
            if name in _BLIP_VIT:
                out["vision." + _BLIP_VIT[name]] = v
            elif name.startswith("blocks."):
                _, i, rest = name.split(".", 2)
                base, _, leaf = rest.rpartition(".")
                if base not in _BLIP_BLOCK:
                    raise ValueError(f"unknown ImageReward key {k!r}")
                out[f"vision.encoder.layers.{i}.{_BLIP_BLOCK[base]}.{leaf}"] = v
            else:
                raise ValueError(f"unknown ImageReward key {k!r}")
        elif k.startswith("blip.text_encoder."):
            if not k.endswith("position_ids"):
                out["text." + k[len("blip.text_encoder."):]] = v
        elif k.startswith("mlp.layers."):
            out["head." + k[len("mlp."):]] = v
        elif not k.startswith(("blip.vision_proj.", "blip.text_proj.")):
            raise ValueError(f"unknown ImageReward key {k!r}")
    return out


def load_imagereward(source=None, tokenizer_source=None, device="cpu", dtype=None, config=None):
    """(model, tokenizer). ``source``: ImageReward.pt, a folder holding it (and optionally med_config.json), or a
    hub "repo:file"; the tokenizer is bert-base-uncased (``tokenizer_source`` / $OTCA_BERT_TOKENIZER)."""
    from transformers import AutoTokenizer
    device, dtype = torch.device(device), _default_dtype(device, dtype)
    ident = resolve_source("imagereward", source)
    tident = resolve_source("bert_tokenizer", tokenizer_source)

    def make():
        med, keys = os.path.join(ident, "med_config.json"), ("vocab_size", "hidden_size", "intermediate_size",
                                                             "num_hidden_layers", "num_attention_heads")
        over = {k: v for k, v in json.load(open(med)).items() if k in keys} if os.path.isfile(med) else {}
        cfg = config or imagereward_config(over)
        sd = imagereward_to_hf(load_state_dict_file(_resolve_file("imagereward", ident)))
        model = _frozen_on(_from_state_dict(ImageRewardModel, cfg, sd, "ImageReward"), device, dtype)
        model.head.float()
        return model, _load_or_explain("bert_tokenizer", tident, AutoTokenizer.from_pretrained)
    return _cached(("imagereward", ident, tident, str(device), dtype, id(config)), make)


def imagereward(device="cpu", dtype=None, source=None, tokenizer_source=None, config=None, chunk: int = 32):
    """ImageReward (standardised, ~-2..2): BLIP preprocessing (224 px, OpenAI mean / std), prompts padded to 35."""
    model, tok = load_imagereward(source, tokenizer_source, device, dtype, config)
    vcfg = model.vision.config
    p_dtype, p_device = next(model.vision.parameters()).dtype, next(model.parameters()).device

    def score(images, prompts):
        out = []
        for x, ps in zip(images.split(chunk), [prompts[i:i + chunk] for i in range(0, len(prompts), chunk)]):
            t = tok(ps, padding="max_length", truncation=True, max_length=35, return_tensors="pt").to(p_device)
            px = preprocess(x.to(p_device), vcfg.image_size, vcfg.image_size, dtype=p_dtype)
            out.append(model(px, t.input_ids, t.attention_mask))
        return torch.cat(out)
    return _image_score_to_reward(score)


# ------------------------------------------------------------------------------------------------------ video
# video_clip_score / video_aesthetic are clip_score / aesthetic: per-frame scores averaged over frames.
def video_consistency(device="cpu", dtype=None, source=None, processor_source=None):
    """Temporal consistency in [-1, 1] (1 = identical frames), VBench's subject-consistency formula on CLIP
    ViT-L/14 image embeddings: mean over frames t >= 1 of (cos(e_t, e_{t-1}) + cos(e_t, e_0)) / 2.
    A single image or a one-frame video scores 1."""
    clip = load_clip("clip", source, processor_source, device, dtype)

    def fn(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
        frames, f = _as_images(pixels)
        if f == 1:
            return torch.ones(pixels.shape[0], device=pixels.device)
        e = clip.image_embeds(frames).view(pixels.shape[0], f, -1)
        adj, first = (e[:, 1:] * e[:, :-1]).sum(-1), (e[:, 1:] * e[:, :1]).sum(-1)
        return ((adj + first) / 2).mean(1).float().to(pixels.device)
    return fn


def video_motion(device="cpu", dtype=None, source=None, scale: float = 0.05, max_side: int = 64):
    """Amount of motion in [0, 1): 1 - exp(-d / scale), d the mean absolute difference of adjacent frames in
    pixel space (frames area-downsampled to <= ``max_side`` px, which damps pixel noise). 0 for a static video
    or an image; saturates so that flicker cannot win without bound. Model-free (``source`` is ignored)."""
    def fn(pixels: torch.Tensor, prompts: list) -> torch.Tensor:
        frames, f = _as_images(pixels.float().clamp(0, 1))
        if f == 1:
            return torch.zeros(pixels.shape[0], device=pixels.device)
        h, w = frames.shape[-2:]
        k = max(1, -(-min(h, w) // max_side))
        small = F.avg_pool2d(frames, k, ceil_mode=True) if k > 1 else frames
        small = small.view(pixels.shape[0], f, *small.shape[1:])
        d = (small[:, 1:] - small[:, :-1]).abs().flatten(1).mean(1)
        return (1 - torch.exp(-d / scale)).float()
    return fn


REWARD_FACTORIES: dict[str, Callable] = {
    "clip_score": clip_score, "pickscore": pickscore, "aesthetic": aesthetic, "hpsv21": hpsv21,
    "imagereward": imagereward, "video_clip_score": clip_score, "video_aesthetic": aesthetic,
    "video_consistency": video_consistency, "video_motion": video_motion,
}


def build_reward(name: str, source: str | None = None, device="cpu", dtype=None, **kwargs):
    """One model reward ``fn(pixels, prompts) -> [B]``: ``source`` is a hub id, local folder or file
    (see SOURCES / docs/rewards.md); extra keywords go to the factory (processor_source, clip_source, ...)."""
    if name not in REWARD_FACTORIES:
        raise ValueError(f"unknown model reward {name!r}; known: {sorted(REWARD_FACTORIES)}")
    return REWARD_FACTORIES[name](device=torch.device(device), dtype=dtype, source=source, **kwargs)


# The rewards.py registry: {name: factory(device) -> fn}; sources come from $OTCA_* or the public defaults.
MODEL_REWARDS = {name: (lambda device, _n=name: build_reward(_n, device=device)) for name in REWARD_FACTORIES}
