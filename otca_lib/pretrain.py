"""Pretrain the ShapesWorld base models, the embedded default of the repository (flow matching).

    OMP_NUM_THREADS=2 python -m otca_lib.pretrain image --steps 4200 --eval-every-steps 250 --shapes-per-color 2 --positions-per-shape 3 --loss v --out data/models/shapesworld-image
    python -m otca_lib.pretrain video --minutes 30 --eval-every 150 --max-alignment 0.95 --out data/models/shapesworld-video

The image model is a StableDiffusion3Pipeline in pixel space (no VAE: the state is the 32 x 32 RGB image
in [-1, 1]) whose SD3Transformer2DModel and two small CLIP text encoders are trained from scratch, jointly,
with a word-level tokenizer over the ShapesWorld vocabulary.

Objective (rectified flow, Esser et al. 2024): for a render x0 of a training caption, noise e and a
logit-normal noise level s = sigmoid(n), n ~ N(0, 1), at x_s = (1 - s) x0 + s e the transformer predicts
the clean image x0_theta (not the velocity v = e - x0: a velocity-predicting model of this size left
visible noise in every sample, quality 0.03; Li & He 2025 argue the same for pixel-space models), with
``--loss x0``: mean (x0_theta - x0)^2, or ``--loss v``: mean (v_theta - v)^2 with v_theta = (x_s - x0_theta) / s,
which weights low noise levels by 1 / s^2. It is loaded as the family "sd3-x0" (policy.SD3X0Policy turns x0
into v = (x_s - x0_theta) / s for the samplers). 10 % of captions are dropped (empty prompt) so
classifier-free guidance is possible. An EMA of all trained weights is what gets evaluated and shipped.

The shipped image model sees only a deliberately biased subset of the training captions (``biased``: each
color with two of the three shapes, each shape in one row of the canvas). Trained on every caption, this
model's alignment and quality rise together (quality 0.6 came only with alignment 0.94); on the biased
set it draws clean shapes but binds the words wrongly where the bias says so (held-out alignment 0.77,
quality 0.75), which is the headroom RL is for. data/README.md has the recipes tried.

Level 2 (kind ``image2``, docs/shapesworld.md): the same image model with the pattern words in its vocabulary
(VOCAB2), trained on every training combination (no bias), with captions that leave out the size, pattern and
position words with the probabilities ``--omit-size``, ``--omit-pattern``, ``--omit-position`` (caption omission,
as alt-text mostly does), so that the model binds those words only sometimes.

The video model is a WanPipeline in pixel space (the state is the (3, 8, 32, 32) video in [-1, 1]) whose
WanTransformer3DModel takes patches of (8, 4, 4): one token holds a 4 x 4 pixel column through all 8 frames,
so 64 tokens cost what the image model's do and every token sees the whole motion. Each token then outputs
384 values from a width of 128, too few to carry the noise in a velocity, so it predicts x0 as well and is
loaded as the family "wan-x0". Its text encoder is a small UMT5 trained jointly, as the CLIPs are for images.
Both load through the same ``policy.load_policy(family, folder)`` path as the real checkpoints.

Every ``--eval-every`` seconds (or ``--eval-every-steps`` steps) the EMA weights sample the held-out prompts deterministically (ODE,
10 steps, fixed seeds, no guidance) and are scored with the exact ShapesWorld rewards. RL needs
headroom, so the shipped snapshot is the last one whose held-out text alignment is at most
``--max-alignment`` and (videos) whose motion-direction accuracy is below ``--max-direction`` (and,
among those, quality at least ``--min-quality`` when any reaches it); the
log of every evaluation, the seed, the command and the wall time go to ``pretrain.json`` beside the
weights, and ``SHA256SUMS`` lists every file (verified at load).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline,
                       WanPipeline, WanTransformer3DModel)

from . import shapesworld as sw
from . import shapesworld2 as sw2
from .checksums import write_sha256sums
from .ema import EMA, warmup_decay
from .policy import ModelNotAvailable, policy_from_pipeline, verify_sha256sums
from .rewards import build_rewards, reward
from .sample import RolloutSpec, sample
from .seeds import Stream, generator, sample_seed
from .tiny import tokenizer, word_vocab

VOCAB = word_vocab(["a", "at", "the", "moving", *sw.SIZES, *sw.COLORS, *sw.SHAPES,
                    *(w for p in sw.POSITIONS for w in p.split()), *sw.DIRECTIONS])
VOCAB2 = word_vocab([*list(VOCAB)[3:], *sw2.PATTERNS])  # level 2 (image2): level 1's words and the patterns, in that order
MAX_TOKENS = 12  # the longest caption ("a large purple triangle at the bottom right") is 8 words + </s>
EVAL_REWARDS = {"image": sw.OBJECTIVES["image"], "video": sw.OBJECTIVES["video"], "image2": sw2.OBJECTIVES["image"]}


def _clip(hidden: int, projection: int, vocab: dict = VOCAB):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=MAX_TOKENS, projection_dim=projection,
        pad_token_id=0, eos_token_id=1, bos_token_id=1))


def image_pipeline(seed: int = 0, vocab: dict = VOCAB) -> StableDiffusion3Pipeline:
    """The untrained ShapesWorld image model: 6 layers of width 128 on 8 x 8 patches of 4 x 4 pixels (`vocab`:
    the tokenizers' words, VOCAB2 for level 2)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(seed, Stream.PRETRAIN_WEIGHTS))
        transformer = SD3Transformer2DModel(
            sample_size=32, patch_size=4, in_channels=3, out_channels=3, num_layers=6, attention_head_dim=32,
            num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=128, pooled_projection_dim=64,
            pos_embed_max_size=8)
        # SD3 concatenates both CLIPs' penultimate states (2 x 32 = joint_attention_dim) and pooled outputs
        # (2 x 32 = pooled_projection_dim); without a T5 it appends MAX_TOKENS zero tokens.
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=None,
            text_encoder=_clip(32, 32, vocab), tokenizer=tokenizer(MAX_TOKENS, vocab),
            text_encoder_2=_clip(32, 32, vocab), tokenizer_2=tokenizer(MAX_TOKENS, vocab),
            text_encoder_3=None, tokenizer_3=None)


def video_pipeline(seed: int = 0) -> WanPipeline:
    """The untrained ShapesWorld video model: 6 layers of width 128 on 64 tokens of (8, 4, 4) pixels, x0-predicting."""
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample_seed(seed, Stream.PRETRAIN_WEIGHTS))
        transformer = WanTransformer3DModel(
            patch_size=(8, 4, 4), num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=3,
            text_dim=64, freq_dim=64, ffn_dim=256, num_layers=6, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(VOCAB), d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        return WanPipeline(tokenizer=tokenizer(MAX_TOKENS, VOCAB), text_encoder=text_encoder,
                           transformer=transformer, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))


def _modules(pipe):
    """The jointly trained modules: the transformer and the text encoder(s)."""
    return [m for m in (pipe.transformer, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]


def image_x0(pipe, x0, captions, e, s):
    """-> (x_s, x0_theta) of the SD3 image model on images x0 (B, 3, 32, 32) at noise levels s (B,)."""
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, prompt_2=None, prompt_3=None,
                                              do_classifier_free_guidance=False, max_sequence_length=MAX_TOKENS)
    x = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * e
    return x, pipe.transformer(hidden_states=x, timestep=s * 1000, encoder_hidden_states=embeds,
                               pooled_projections=pooled, return_dict=False)[0]


def video_x0(pipe, x0, captions, e, s):
    """-> (x_s, x0_theta) of the Wan video model on videos x0 (B, 3, 8, 32, 32) at noise levels s (B,)."""
    embeds, _ = pipe.encode_prompt(prompt=captions, do_classifier_free_guidance=False, max_sequence_length=MAX_TOKENS)
    x = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * e
    return x, pipe.transformer(hidden_states=x, timestep=s * 1000, encoder_hidden_states=embeds, return_dict=False)[0]


def x0_loss(x, x0_theta, x0, s):
    """mean (x0_theta - x0)^2: every noise level weighted alike (the video model's loss)."""
    return torch.nn.functional.mse_loss(x0_theta, x0)


def v_loss(x, x0_theta, x0, s):
    """mean (v_theta - v)^2 with v = (x_s - x0) / s, i.e. (x0_theta - x0)^2 / s^2: the velocity loss of an
    x0-predicting model (Li & He 2025), which weights the low noise levels that decide edges and specks most.
    s is clamped at 0.05 in the division so the weight stays <= 400."""
    s = s.clamp(min=0.05).view(-1, *[1] * (x.ndim - 1))
    return torch.nn.functional.mse_loss((x - x0_theta) / s, (x - x0) / s)


LOSSES = {"x0": x0_loss, "v": v_loss}


def biased(captions: list[str], shapes_per_color: int = 3, positions_per_shape: int = 9) -> list[str]:
    """The pretraining captions with a deliberate bias, as web data has: the i-th color is only ever seen with the
    shapes i, i + 1, ... (mod 3), `shapes_per_color` of them, and (images) the j-th shape only at the positions
    3j, 3j + 1, ... (mod 9), `positions_per_shape` of them (3: circles in the top row, squares in the middle,
    triangles at the bottom). Defaults keep every caption."""
    colors, positions = list(sw.COLORS), list(sw.POSITIONS)
    if not (1 <= shapes_per_color <= len(sw.SHAPES) and 1 <= positions_per_shape <= len(positions)):
        raise ValueError(f"shapes_per_color must be in 1..{len(sw.SHAPES)} and positions_per_shape in "
                         f"1..{len(positions)}, got {shapes_per_color} and {positions_per_shape}")
    keep = []
    for caption in captions:
        a = sw.parse_caption(caption)
        c, s = colors.index(a["color"]), sw.SHAPES.index(a["shape"])
        ok = (s - c) % len(sw.SHAPES) < shapes_per_color
        if a["kind"] == "image":
            ok = ok and (positions.index(a["position"]) - 3 * s) % len(positions) < positions_per_shape
        if ok:
            keep.append(caption)
    return keep


KINDS = {  # kind -> (untrained pipeline, policy family, x0 prediction, batch default)
    "image": (image_pipeline, "sd3-x0", image_x0, 64),
    "image2": (lambda seed=0: image_pipeline(seed, VOCAB2), "sd3-x0", image_x0, 64),
    "video": (video_pipeline, "wan-x0", video_x0, 32),
}


@torch.no_grad()
def evaluate(pipe, captions: list[str], num_steps: int = 10, seed: int = 0, device="cpu", kind: str | None = None
             ) -> dict[str, float]:
    """Held-out means of the ShapesWorld rewards on deterministic samples (ODE, fixed seeds, no guidance): the
    samples the trainer's evaluation and ``python -m otca_lib.evaluate`` draw with the same seed. kind: a key of
    KINDS (default: 'video' for a WanPipeline, else 'image')."""
    kind = kind or ("video" if isinstance(pipe, WanPipeline) else "image")
    policy = policy_from_pipeline(KINDS[kind][1], pipe, device=device, keep_reference=False, max_sequence_length=MAX_TOKENS)
    frames = sw.FRAMES if kind == "video" else None
    spec = RolloutSpec(policy.sigmas(num_steps, sw.H, sw.W), policy.latent_shape(sw.H, sw.W, frames), batch_size=64)
    ro = sample(policy, captions, spec, seeds=[sample_seed(seed, Stream.EVAL, i) for i in range(len(captions))])
    pixels = ro.pixels.cpu()
    return {k: float(v.mean()) for k, v in reward(build_rewards(EVAL_REWARDS[kind]), pixels, captions).items()}


@dataclass(frozen=True)
class Recipe:
    """What is pretrained, on which captions and how: every field is a command-line option of the same name."""
    kind: str                       # a key of KINDS: 'image', 'image2' (level 2) or 'video'
    loss: str = "x0"                # a key of LOSSES
    lr: float = 6e-4                # AdamW learning rate
    batch: int | None = None        # captions per step (default: KINDS' 64 images or 32 videos)
    seed: int = 0                   # weights (stream PRETRAIN_WEIGHTS) and data (PRETRAIN_DATA)
    ema_decay: float = 0.999        # decay of the weights' EMA (what is evaluated and shipped), after its warm-up (ema.py)
    caption_dropout: float = 0.1    # probability that a caption is replaced by the empty prompt (CFG stays possible)
    shapes_per_color: int = 3       # level 1's bias (`biased`): each color seen with this many shapes
    positions_per_shape: int = 9    # level 1's bias: each shape seen at this many positions
    omit: tuple = ()                # level 2: ((attribute, probability), ...) of leaving a word out of a caption


@dataclass(frozen=True)
class Selection:
    """Which evaluation is shipped: the last one with held-out alignment <= max_alignment (and, for videos, direction
    accuracy < max_direction), among those the last with quality >= min_quality if any reaches it."""
    max_alignment: float = 0.8
    max_direction: float = 0.9
    min_quality: float = 0.6


def pretraining_captions(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(training captions, held-out captions) of a recipe: level 2 uses every training caption (its words are
    left out per batch instead); level 1 the biased subset."""
    omit = dict(recipe.omit)
    if omit and recipe.kind != "image2":
        raise ValueError("caption omission (omit) is a level-2 recipe: use kind 'image2'")
    if set(omit) - set(sw2.OMITTABLE):
        raise ValueError(f"omit {sorted(set(omit) - set(sw2.OMITTABLE))}: a caption can only leave out {list(sw2.OMITTABLE)}")
    if recipe.kind == "image2":
        return sw2.prompts("train"), sw2.prompts("test")
    return (biased(sw.prompts(recipe.kind, "train"), recipe.shapes_per_color, recipe.positions_per_shape),
            sw.prompts(recipe.kind, "test"))


def draw_batch(recipe: Recipe, captions: list[str], batch: int, g: torch.Generator, device) -> tuple:
    """One step's data from the generator g: (x0, captions as the model reads them, e, s). x0 are renders in [-1, 1],
    (B, 3, 32, 32) images or (B, 3, 8, 32, 32) videos from seeded random start positions (images draw no start
    seed: each image caption has exactly one render); level 2 leaves words out, then any caption may be dropped
    (classifier-free guidance); e ~ N(0, I); s = sigmoid(n), n ~ N(0, 1), the logit-normal noise levels."""
    level2 = recipe.kind == "image2"
    caps = [captions[i] for i in torch.randint(len(captions), (batch,), generator=g).tolist()]
    start = int(torch.randint(2**31, (1,), generator=g)) if recipe.kind == "video" else None
    x0 = (sw2.render_batch(caps, device) if level2 else sw.render_batch(caps, seed=start, device=device)) * 2 - 1
    if level2:  # caption omission: each of size / pattern / position left out with its probability
        omit = dict(recipe.omit)
        u = torch.rand(batch, len(sw2.OMITTABLE), generator=g)
        caps = [sw2.caption(**{k: a[k] for k in ("color", "shape", "size", "pattern", "position")},
                            omit=[n for j, n in enumerate(sw2.OMITTABLE) if u[i, j] < omit.get(n, 0.0)])
                for i, a in enumerate(map(sw2.parse_caption, caps))]
    dropped = torch.rand(batch, generator=g) < recipe.caption_dropout
    caps = ["" if d else c for c, d in zip(caps, dropped.tolist())]
    e = torch.randn(x0.shape, generator=g).to(device)
    s = torch.sigmoid(torch.randn(batch, generator=g)).to(device)
    return x0, caps, e, s


def choose(history: list[dict], level2: bool, selection: Selection) -> int:
    """The index of the evaluation to ship (see Selection); the last one if none qualifies."""
    prefix = "sw2" if level2 else "sw"
    ok = [i for i, r in enumerate(history) if r[f"{prefix}_alignment"] <= selection.max_alignment
          and r.get("sw_direction", 0.0) < selection.max_direction]
    good = [i for i in ok if history[i][f"{prefix}_quality"] >= selection.min_quality]
    return (good or ok or [len(history) - 1])[-1]


def train(recipe: Recipe, minutes: float, *, steps: int | None = None, eval_every: float = 120.0,
          eval_every_steps: int | None = None, selection: Selection = Selection(), init: str | None = None,
          device="cpu", log=print) -> dict:
    """Train for `steps` optimizer steps or `minutes` of wall time, whichever ends first, evaluating the EMA
    every `eval_every_steps` steps (or, without it, every `eval_every` seconds) and at the end; the pipeline that
    comes back holds the evaluation `selection` chooses. init: a folder this command wrote (same kind): training
    continues from its weights and its snapshot's step count (`steps` is then the total to reach). A warm start,
    not a resume: the optimizer's moments restart, and the data are drawn from a stream of their own."""
    make_pipeline, _, predict, default_batch = KINDS[recipe.kind]
    train_caps, test_caps = pretraining_captions(recipe)
    batch = recipe.batch or default_batch
    torch.manual_seed(recipe.seed)  # (nothing below should draw from the global generator; every draw has its stream)
    pipe = make_pipeline(recipe.seed).to(device)
    start_step = load_init(pipe, Path(init), recipe.kind) if init else 0
    modules = _modules(pipe)
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train()
    ema = EMA(params, recipe.ema_decay)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    log(f"{len(train_caps)} training captions")
    # not the weights' stream: the data must not replay their draws; a continuation draws its own data
    g = generator(recipe.seed, Stream.PRETRAIN_DATA) if start_step == 0 else generator(recipe.seed, Stream.PRETRAIN_DATA, start_step)
    history, snapshots = [], []
    t_start = time.time()
    step, loss = start_step, None
    while True:
        elapsed = time.time() - t_start
        done = elapsed >= minutes * 60 or (steps is not None and step >= steps)
        due = (step > start_step and step % eval_every_steps == 0) if eval_every_steps else elapsed >= eval_every * (len(history) + 1)
        if due or done:
            with ema.swapped():  # a copy with the averaged weights: the policy wrapper freezes and evals its modules
                eval_pipe = copy.deepcopy(pipe)
            snapshots.append([{k: v.clone() for k, v in m.state_dict().items()} for m in _modules(eval_pipe)])
            row = {"minutes": round(elapsed / 60, 2), "step": step, "loss": None if loss is None else round(float(loss.detach()), 4),
                   **evaluate(eval_pipe, test_caps, seed=recipe.seed, device=device, kind=recipe.kind)}
            history.append(row)
            log(json.dumps(row))
            if done:
                break
        x0, caps, e, s = draw_batch(recipe, train_caps, batch, g, device)
        x, x0_theta = predict(pipe, x0, caps, e, s)
        loss = LOSSES[recipe.loss](x, x0_theta, x0, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(warmup_decay(recipe.ema_decay, step))
        step += 1
    chosen = choose(history, recipe.kind == "image2", selection)
    for m, state in zip(_modules(pipe), snapshots[chosen]):
        m.load_state_dict(state)
    return {"pipeline": pipe, "history": history, "chosen": chosen, "steps": step, "captions": len(train_caps),
            "wall_minutes": round((time.time() - t_start) / 60, 2)}


def load_init(pipe, folder: Path, kind: str) -> int:
    """Load the trained modules of a folder this command wrote into `pipe` (safetensors only, checksums
    verified, the kind and vocabulary checked); -> the step count of its snapshot."""
    from safetensors.torch import load_file

    meta_path = folder / "pretrain.json"
    if not meta_path.is_file():
        raise ValueError(f"--init {folder}: no pretrain.json there; give a folder written by python -m otca_lib.pretrain")
    verify_sha256sums(folder)
    meta = json.loads(meta_path.read_text())
    if meta.get("family") != KINDS[kind][1] or meta.get("kind", kind) != kind:
        raise ValueError(f"--init {folder} was pretrained as {meta.get('kind', meta.get('family'))!r}, not {kind!r}")
    vocab = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    if vocab != pipe.tokenizer.get_vocab():
        raise ValueError(f"--init {folder}: its vocabulary differs from the {kind} model's; it cannot be continued")
    for name in ("transformer", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            files = sorted((folder / name).glob("*.safetensors"))
            if len(files) != 1:
                raise ValueError(f"--init {folder}: expected one .safetensors file in {name}/, found {len(files)}")
            module.load_state_dict(load_file(files[0]))
    return int(meta["held_out"]["step"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=list(KINDS))
    ap.add_argument("--minutes", type=float, default=None, help="wall-time budget of the training loop (default 30)")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps (or --minutes, "
                    "whichever comes first); with --eval-every-steps the run no longer depends on the machine's speed")
    ap.add_argument("--out", required=True, help="folder for the pipeline (save_pretrained), pretrain.json, SHA256SUMS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None, help="64 images or 32 videos per step")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--eval-every", type=float, default=120.0, help="seconds between held-out evaluations")
    ap.add_argument("--eval-every-steps", type=int, default=None, help="evaluate every N steps instead")
    ap.add_argument("--caption-dropout", type=float, default=0.1, help="probability that a training caption is "
                    "replaced by the empty prompt (the unconditional model of classifier-free guidance)")
    ap.add_argument("--shapes-per-color", type=int, default=3, help="bias: each color seen with this many shapes")
    ap.add_argument("--positions-per-shape", type=int, default=9, help="bias: each shape seen at this many positions")
    for name in ("size", "pattern", "position"):
        ap.add_argument(f"--omit-{name}", type=float, default=0.0, metavar="P", help=f"level 2 (image2): probability "
                        f"that a pretraining caption leaves out the {name}")
    ap.add_argument("--init", metavar="DIR", help="continue from a folder this command wrote (same kind): its "
                    "weights and step count; --steps is then the total to reach (the optimizer restarts)")
    ap.add_argument("--device", default="cpu", help="torch device of the training loop (e.g. cuda)")
    ap.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    ap.add_argument("--max-alignment", type=float, default=0.8)
    ap.add_argument("--max-direction", type=float, default=0.9, help="videos: direction accuracy must stay below this")
    ap.add_argument("--min-quality", type=float, default=0.6)
    ap.add_argument("--ema-decay", type=float, default=0.999, help="decay of the weights' EMA (what is evaluated and shipped)")
    ap.add_argument("--loss", choices=list(LOSSES), default="x0", help="x0: (x0_theta - x0)^2; v: the same / s^2")
    a = ap.parse_args(argv)
    for ok, message in ((a.steps is None or a.steps >= 1, f"--steps {a.steps}: give at least 1 step"),
                        (a.eval_every_steps is None or a.eval_every_steps >= 1,
                         f"--eval-every-steps {a.eval_every_steps}: give at least 1 step"),
                        (0.0 <= a.caption_dropout <= 1.0, f"--caption-dropout {a.caption_dropout}: give a probability in [0, 1]"),
                        *((0.0 <= p <= 1.0, f"--omit-{n} {p}: give a probability in [0, 1]") for n, p in
                          (("size", a.omit_size), ("pattern", a.omit_pattern), ("position", a.omit_position))),
                        (a.kind == "image2" or not (a.omit_size or a.omit_pattern or a.omit_position),
                         "--omit-* are level-2 options: use the kind image2"),
                        (a.lr > 0 and math.isfinite(a.lr), f"--lr {a.lr}: give a finite learning rate > 0"),
                        (a.init is None or Path(a.init).resolve() != Path(a.out).resolve(),
                         "--init and --out name the same folder: write the continuation to a new folder"),
                        # checked before training, so that a long run is never lost at the end, and no model is
                        # replaced by accident (data/models holds the shipped ones)
                        (not Path(a.out).is_file(), f"--out {a.out} is a file: give a folder"),
                        (a.overwrite or not any((Path(a.out) / f).exists() for f in ("pretrain.json", "model_index.json")),
                         f"--out {a.out} already holds a model: choose another folder, or pass --overwrite to replace it")):
        if not ok:
            ap.error(message)
    minutes = a.minutes or 30.0
    omit = tuple((n, getattr(a, f"omit_{n}")) for n in ("size", "pattern", "position")) if a.kind == "image2" else ()
    recipe = Recipe(a.kind, loss=a.loss, lr=a.lr, batch=a.batch, seed=a.seed, ema_decay=a.ema_decay,
                    caption_dropout=a.caption_dropout, shapes_per_color=a.shapes_per_color,
                    positions_per_shape=a.positions_per_shape, omit=omit)
    try:
        result = train(recipe, minutes, steps=a.steps, eval_every=a.eval_every, eval_every_steps=a.eval_every_steps,
                       selection=Selection(a.max_alignment, a.max_direction, a.min_quality), init=a.init, device=a.device)
    except (ValueError, ModelNotAvailable) as e:  # user errors train() finds: a bad --init folder or recipe
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["pipeline"].save_pretrained(out)
    meta = {"command": "python -m otca_lib.pretrain " + " ".join(argv if argv is not None else sys.argv[1:]),
            "kind": a.kind, "init": a.init, "family": KINDS[a.kind][1], "max_sequence_length": MAX_TOKENS, "seed": a.seed, "torch_threads": torch.get_num_threads(), "steps": result["steps"],
            "wall_minutes": result["wall_minutes"], "pretraining_captions": result["captions"], "chosen_evaluation": result["chosen"],
            "held_out": result["history"][result["chosen"]], "history": result["history"]}
    (out / "pretrain.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_sha256sums(out)
    print(f"wrote {out}: evaluation {result['chosen']} of {len(result['history'])}: {json.dumps(meta['held_out'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
