"""The one training configuration, its validation, its derived batch arithmetic, and the named presets.

A preset is a function returning a :class:`Config`; ``--set key=value`` overrides any field after it.
Everything that can be wrong with a config is reported by :func:`validate` before any model is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from .sde import SDE_STEPS, SDEKind
from .steps import TRAIN_STEP_RULES, TrainedSteps, TrainStepRule

if TYPE_CHECKING:
    from .credit import CreditMethod

Family = Literal["sd3", "flux", "wan", "sd3-x0", "wan-x0"]
FAMILIES = get_args(Family)           # policy.POLICIES has one adapter each (tests/test_policy.py)
VIDEO_FAMILIES = ("wan", "wan-x0")    # the families whose samples have frames (Policy.is_video)
DType = Literal["float32", "bfloat16", "float16"]
DTYPES = get_args(DType)
TCDSpace = Literal["latent", "x0_hat"]
TCD_SPACES = get_args(TCDSpace)


@dataclass
class Config:
    # ----- model -----
    family: Family = "sd3"
    """Pipeline family: 'sd3' (StableDiffusion3Pipeline), 'flux' (FluxPipeline), 'wan' (WanPipeline, video),
    'sd3-x0' / 'wan-x0' (the same pipelines with a transformer that predicts x0, as the ShapesWorld models do)."""
    model: str = "tiny-sd3"
    """Hub id or local folder passed to the pipeline's from_pretrained; 'tiny-<family>' builds a tiny random-init pipeline offline."""
    dtype: DType = "float32"
    """Weights and activations dtype of the frozen model ('bfloat16' on GPUs); SDE math is always float32."""
    lora_rank: int = 0
    """LoRA rank of the trained adapter; 0 trains all transformer weights (only sensible for tiny models)."""
    lora_alpha: float = 0.0
    """LoRA scaling numerator (scale = alpha / rank); 0 means alpha = rank."""
    height: int = 32
    """Sample height in pixels."""
    width: int = 32
    """Sample width in pixels."""
    frames: int = 0
    """Video frames (0 for an image model)."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass (less memory, ~30 % more update time)."""

    # ----- sample -----
    num_steps: int = 10
    """Denoising steps of a training rollout."""
    eval_num_steps: int = 10
    """Denoising steps of the deterministic (ODE) evaluation samples."""
    sde: SDEKind = "flow_grpo"
    """Stochastic step: 'flow_grpo' (noise level a), 'dance' (constant eta), 'cps' (coefficient-preserving); see sde.py."""
    noise_level: float = 0.7
    """The SDE's noise knob: a for flow_grpo / cps, eta for dance."""
    train_steps: TrainStepRule = "all"
    """Which steps are stochastic and trained (the others and the final step use the ODE): 'all', 'random' (a fresh fraction each iteration, DanceGRPO), 'window' (a sliding window, MixGRPO)."""
    train_fraction: float = 0.6
    """Fraction of steps trained per iteration when train_steps='random'."""
    window_size: int = 4
    """Trained steps in the window when train_steps='window'."""
    window_shift_every: int = 25
    """Iterations between one-step shifts of the window (it wraps around)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance scale during rollouts, recomputation and evaluation; 1 disables CFG."""
    shared_initial_noise: bool = False
    """Start all samples of a group from the same initial noise (differences come from the SDE only)."""

    # ----- batch -----
    prompts_per_iteration: int = 4
    """Prompts per iteration, over all processes."""
    group_size: int = 8
    """Samples per prompt (G); advantages compare samples within a group."""
    rollout_batch_size: int = 8
    """Samples per transformer call during sampling and evaluation, per process."""
    train_micro_batch: int = 16
    """(sample, step) pairs per forward/backward during the update, per process (gradient accumulation)."""
    optimizer_steps_per_iteration: int = 1
    """Optimizer steps per iteration; the iteration's (sample, step) pairs are shuffled and split evenly."""

    # ----- reward -> advantage -----
    rewards: dict = field(default_factory=lambda: {"brightness": 1.0})
    """Reward names (see rewards.py registry) and their weights."""
    credit: CreditMethod = "grpo"
    """Credit assignment method (credit.py) turning per-reward advantages into a [B, T] tensor."""
    global_std: bool = False
    """Normalise advantages by the batch std instead of each group's std."""
    adv_eps: float = 1e-4
    """Added to the std in the advantage denominator; a group of equal rewards gets advantage 0."""
    adv_clip: float = 5.0
    """Advantages are clipped to [-adv_clip, adv_clip]."""
    adv_rms: float = 0.0
    """0 keeps each credit method's advantages as they are; > 0 rescales an iteration's final advantages (after credit
    assignment) so that their root mean square over the whole batch is adv_rms (credit.match_rms). Methods then
    compare at the same effective step size: MOCA's min-norm combination shrinks advantages (all weight on the
    smallest |A_k|, or cancellation to 0), which acts like a smaller learning rate."""

    # ----- credit assignment knobs (credit.py; docs/algorithm.md section 3) -----
    tcd_space: TCDSpace = "latent"
    """TCD measures progress towards the final sample on the states ('latent', the review's reading) or on the predicted clean samples ('x0_hat', CoCA's)."""
    tcd_window: int = 1
    """TCD averages the gains over windows of this many consecutive steps (1 = per step)."""
    tcd_max_gain: float = 0.0
    """TCD clips each step's gain to [0, tcd_max_gain] before normalising; 0 clips at 0 only."""
    tcd_eps: float = 1e-3
    """Added to every clipped gain: keeps weights finite and makes a trajectory without gains uniform."""
    moca_lambda: float = 0.3
    """MOCA exploration weight: c = (1 - lambda) c_min_norm + lambda u, with u the normalised reward weights."""
    oa_stride: int = 1
    """Objective-aware credit: score the rewards on x0_hat every oa_stride steps (gains spread evenly in between)."""
    oa_sample_fraction: float = 1.0
    """Objective-aware credit: fraction of samples whose x0_hat are scored; the others use the amortised profile."""
    oa_every: int = 1
    """Objective-aware credit: re-estimate the step profiles every oa_every iterations; reuse the amortised profile otherwise."""
    oa_ema: float = 0.9
    """Objective-aware credit: decay of the amortised per-objective step profile."""
    mgda_floor: float = 0.1
    """gradient_mgda: the smallest weight any objective's gradient gets in the min-norm combination (at most 1 / the
    number of rewards); 0 is plain MGDA, whose min-norm point may drop an objective entirely."""

    # ----- update -----
    learning_rate: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip_range: float = 1e-4
    """PPO ratio clip epsilon (Flow-GRPO / DanceGRPO use 1e-4)."""
    beta: float = 0.0
    """Weight of the KL to the reference policy (mean-space, see sde.kl_in_mean_space); 0 skips the reference forward."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables."""
    max_nonfinite_steps: int = 3
    """An optimizer step whose gradient norm is not finite (a NaN / inf loss or gradient) is skipped and counted
    (policy/skipped_steps); after this many in a row the run stops with an error instead of training on."""
    fsdp: bool = False
    """Shard the transformer, its gradients and its optimizer state over the processes with torch's FSDP2 (fsdp.py)
    instead of replicating it (DDP); the same weights either way. For models that do not fit one GPU per process
    (the dry run's memory table); nothing to shard with one process. Not with gradient_mgda or conflict_every."""
    ema_decay: float = 0.0
    """EMA of the trainable weights used for evaluation and saved with checkpoints; 0 disables."""

    # ----- run -----
    iterations: int = 20
    """Training iterations (one iteration = sample, reward, advantage, update)."""
    seed: int = 0
    """Seeds prompts, initial noise and SDE noise; results do not depend on the number of processes."""
    train_prompts: str = "data/prompts/tiny_train.txt"
    """Training prompt file, one prompt per line."""
    test_prompts: str = "data/prompts/tiny_test.txt"
    """Held-out prompt file for evaluation."""
    eval_every: int = 10
    """Evaluate on held-out prompts every K iterations (and at the end); 0 disables."""
    eval_samples: int = 8
    """Held-out samples per evaluation (prompts cycled, fixed seeds)."""
    conflict_every: int = 0
    """Every K iterations (0: never), the conflict probe (update.conflict_cosines; MARBLE's diagnostic): on the first
    optimizer step, the cosine of each objective's own policy gradient (its group advantage alone) with the gradient
    the credit method's update steps with (before the optimizer's rescaling), logged as conflict/cosine/<name> and conflict/against (1 when some objective's gradient
    points against it). Costs one forward and one backward pass per objective more on those iterations;
    gradient_mgda logs the same at every step without it."""
    eval_metrics: list = field(default_factory=list)
    """Registry rewards scored in evaluation only (logged as eval/<name>/mean, not trained on, not in the total),
    e.g. ['sw_direction'] for video."""
    dist_timeout_minutes: float = 10.0
    """How long a process waits in a collective (gather, all-reduce, barrier) for a stuck one before the job
    fails (torch's default is 30 minutes)."""
    checkpoint_every: int = 10
    """Write a checkpoint every K iterations (and at the end); 0 writes only the last one."""
    keep_checkpoints: int = 3
    """Checkpoints kept: after each write, older ones beyond the newest this many are deleted (a long run does not
    fill the disk); 0 keeps every one. Checkpoints newer than the one written (left by resuming from an older one)
    are never deleted."""
    output_dir: str = "runs/default"
    """Where metrics, TensorBoard logs, samples and checkpoints go."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def is_video(self) -> bool:
        """Whether samples are videos (B, C, F, H, W): frames > 0, which validate() ties to the video families."""
        return self.frames > 0


# ----------------------------------------------------------------------------- presets
def tiny_sd3() -> Config:
    """A tiny random-init StableDiffusion3Pipeline, fully offline: the CPU demo and the tests."""
    return Config(family="sd3", model="tiny-sd3", height=32, width=32, num_steps=8, eval_num_steps=8,
                  prompts_per_iteration=4, group_size=4, rollout_batch_size=16, train_micro_batch=32,
                  learning_rate=3e-4, rewards={"brightness": 1.0}, output_dir="runs/tiny-sd3")


def tiny_sd3_pixel() -> Config:
    """A tiny random-init SD3 transformer in pixel space (no VAE): the demo, where a reward visibly rises."""
    c = tiny_sd3()
    c.model, c.output_dir, c.learning_rate, c.group_size = "tiny-sd3-pixel", "runs/tiny-sd3-pixel", 1e-3, 8
    return c


def tiny_flux() -> Config:
    """A tiny random-init FluxPipeline (packed latents)."""
    c = tiny_sd3()
    c.family, c.model, c.noise_level, c.output_dir = "flux", "tiny-flux", 0.9, "runs/tiny-flux"
    return c


def tiny_wan() -> Config:
    """A tiny random-init WanPipeline (video, (B, C, F, H, W) latents)."""
    c = tiny_sd3()
    c.family, c.model, c.frames, c.output_dir = "wan", "tiny-wan", 9, "runs/tiny-wan"
    return c


def shapesworld_image() -> Config:
    """The embedded default: the shipped ShapesWorld image model (pixel-space SD3 predicting x0, data/models) with
    its exact rewards; full fine-tuning of its 3.5 M-parameter transformer. 4 prompts x 8 samples x 8 steps,
    half of them trained per iteration (about 1.4 s per iteration on 2 CPU cores). lr 1e-5: full fine-tuning of a
    model that draws clean pixels breaks them at larger rates (on the shipped model, GRPO at 1e-4: held-out quality
    0.67 -> 0.18 in 10 iterations; at 3e-5 it falls to 0.55 by iteration 30; README)."""
    return Config(
        family="sd3-x0", model="data/models/shapesworld-image", height=32, width=32, num_steps=8, eval_num_steps=10,
        sde="flow_grpo", noise_level=0.7, train_steps="random", train_fraction=0.5,
        prompts_per_iteration=4, group_size=8, rollout_batch_size=32, train_micro_batch=48,
        rewards={"sw_alignment": 1.0, "sw_quality": 0.5, "sw_aesthetic": 0.25},
        learning_rate=1e-5, clip_range=1e-4, iterations=30, eval_every=10, eval_samples=48, checkpoint_every=10,
        eval_metrics=["sw_color", "sw_shape", "sw_position", "sw_size"],
        train_prompts="data/prompts/shapesworld_image_train.txt", test_prompts="data/prompts/shapesworld_image_test.txt",
        output_dir="runs/shapesworld-image")


def shapesworld2_image() -> Config:
    """ShapesWorld level 2 (docs/shapesworld.md), the default ShapesWorld image preset of the notebooks and the
    reproduction: the shipped level-2 model (shapes with a fill pattern, pretrained on captions that mostly
    omit position, pattern and size; data/README.md) with the level-2 rewards; otherwise the level-1 image
    preset's recipe, but with a KL anchor (beta 0.04, Flow-GRPO's value) at lr 3e-5: without it, full
    fine-tuning at 3e-5 broke the pixels (held-out quality 0.71 -> 0.22 in 100 GRPO iterations) and at 1e-5 learned
    little; with it, 200 GRPO iterations raised the total 1.145 -> 1.253 on a partly bound model (data/README.md).
    144 held-out prompts (24 held-out combinations x 2 sizes x 3 patterns)."""
    c = shapesworld_image()
    c.model, c.output_dir = "data/models/shapesworld2-image", "runs/shapesworld2-image"
    c.rewards = {"sw2_alignment": 1.0, "sw2_quality": 0.5, "sw2_aesthetic": 0.25}
    c.eval_metrics = ["sw2_color", "sw2_shape", "sw2_position", "sw2_size", "sw2_pattern"]
    c.eval_samples = 144
    c.learning_rate, c.beta = 3e-5, 0.04
    c.train_prompts, c.test_prompts = "data/prompts/shapesworld2_image_train.txt", "data/prompts/shapesworld2_image_test.txt"
    return c


def shapesworld2_image_parts() -> Config:
    """shapesworld2-image with alignment split into its five parts, each an objective of its own at weight 0.2
    (color, shape, size, position, pattern): the weighted total is the same sum (sw2_alignment is their mean), so
    methods that see only the total (grpo, tcd, noise_weighted) train exactly as on shapesworld2-image, up to
    rounding, while objective-aware ones (per_reward, moca, otca, otca_objective) see the pattern, the objective
    that is decided late, on its own instead of averaged into alignment (docs/results.md: why the study's methods
    do not separate on shapesworld2-image; docs/results_parts.md: what the split changes). sw2_alignment stays in
    evaluation for comparison."""
    c = shapesworld2_image()
    c.output_dir = "runs/shapesworld2-image-parts"
    parts = c.eval_metrics  # sw2_color, sw2_shape, sw2_position, sw2_size, sw2_pattern
    c.rewards = {**{k: c.rewards["sw2_alignment"] / len(parts) for k in parts},
                 **{k: w for k, w in c.rewards.items() if k != "sw2_alignment"}}
    c.eval_metrics = ["sw2_alignment"]
    return c


def shapesworld_video() -> Config:
    """The embedded video default: the shipped ShapesWorld video model (pixel-space Wan predicting x0, data/models)
    with its exact rewards, motion first; full fine-tuning. 4 prompts x 8 videos of 8 frames x 8 steps, half of
    them trained per iteration (about 1.1 s per iteration on 2 CPU cores): 100 iterations."""
    return Config(
        family="wan-x0", model="data/models/shapesworld-video", height=32, width=32, frames=8, num_steps=8,
        eval_num_steps=10, sde="flow_grpo", noise_level=0.7, train_steps="random", train_fraction=0.5,
        prompts_per_iteration=4, group_size=8, rollout_batch_size=32, train_micro_batch=32,
        rewards={"sw_motion": 1.0, "sw_alignment": 0.5, "sw_consistency": 0.25, "sw_quality": 0.25},
        learning_rate=5e-5, clip_range=1e-4, iterations=100, eval_every=25, eval_samples=44, checkpoint_every=25,
        eval_metrics=["sw_direction", "sw_color", "sw_shape", "sw_size"],
        train_prompts="data/prompts/shapesworld_video_train.txt", test_prompts="data/prompts/shapesworld_video_test.txt",
        output_dir="runs/shapesworld-video")


# ----- real models (cluster runs). Values from the public recipes, each with its source; "ours" marks a
# choice of this repository where no public recipe exists. Prompts: pass the papers' training set with
# --set train_prompts=FILE (one prompt per line, or JSONL with a "prompt" field); see data/README.md.
def sd3_5_medium() -> Config:
    """SD3.5-Medium with LoRA, the Flow-GRPO recipe (Liu et al. 2025, arXiv 2505.05470, PickScore task)."""
    return Config(
        family="sd3", model="stabilityai/stable-diffusion-3.5-medium", dtype="bfloat16",
        lora_rank=32, lora_alpha=64,                      # Flow-GRPO
        height=512, width=512,                            # Flow-GRPO
        num_steps=10, eval_num_steps=40,                  # Flow-GRPO: 10 training steps, 40 for evaluation
        sde="flow_grpo", noise_level=0.7,                 # Flow-GRPO (SD3.5)
        guidance_scale=4.5,                               # Flow-GRPO (SD3.5 with CFG)
        group_size=24, prompts_per_iteration=16,          # Flow-GRPO group 24; 16 prompts: ours (8 GPUs x 48 samples)
        rollout_batch_size=8, train_micro_batch=8,        # ours, fits an 80 GB GPU with checkpointing
        rewards={"pickscore": 1.0},                       # Flow-GRPO PickScore task
        learning_rate=3e-4, clip_range=1e-4, beta=0.04,   # Flow-GRPO
        gradient_checkpointing=True, iterations=1000, eval_every=50, checkpoint_every=50,
        train_prompts="data/prompts/general_train.txt", test_prompts="data/prompts/general_test.txt",
        output_dir="runs/sd3.5-medium")


def flux_1_dev() -> Config:
    """FLUX.1-dev with LoRA: OTCA's setup (review: 512 px, 20 steps train / 50 eval) with DanceGRPO's
    SDE and rewards (Xue et al. 2025, arXiv 2505.07818: eta 0.3, 60 % of steps, group 12, HPS-v2.1 + CLIP)."""
    return Config(
        family="flux", model="black-forest-labs/FLUX.1-dev", dtype="bfloat16",
        lora_rank=32, lora_alpha=64,                      # ours (DanceGRPO trains all weights)
        height=512, width=512, num_steps=20, eval_num_steps=50,   # OTCA (review)
        sde="dance", noise_level=0.3, train_steps="random", train_fraction=0.6,  # DanceGRPO
        guidance_scale=1.0,                               # FLUX.1-dev is guidance-distilled: no CFG
        group_size=12, prompts_per_iteration=16,          # DanceGRPO group 12; 16 prompts: ours
        rollout_batch_size=4, train_micro_batch=4,        # ours
        rewards={"hpsv21": 1.0, "clip_score": 1.0},       # DanceGRPO
        learning_rate=1e-4, clip_range=1e-4, beta=0.0,    # clip: DanceGRPO; lr: ours for LoRA
        gradient_checkpointing=True, iterations=300, eval_every=25, checkpoint_every=25,
        train_prompts="data/prompts/general_train.txt", test_prompts="data/prompts/general_test.txt",
        output_dir="runs/flux.1-dev")


def wan2_1_t2v_1_3b() -> Config:
    """Wan2.1-T2V-1.3B with LoRA: DanceGRPO's video SDE on a small video model (ours: resolution, frames, rewards)."""
    return Config(
        family="wan", model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", dtype="bfloat16",
        lora_rank=32, lora_alpha=64,                      # ours
        height=480, width=832, frames=33,                 # ours (Wan's 480p, 33 of its 81 frames)
        num_steps=16, eval_num_steps=50,                  # ours; 50: Wan's default
        sde="dance", noise_level=0.3, train_steps="random", train_fraction=0.6,  # DanceGRPO
        guidance_scale=5.0,                               # Wan2.1's default CFG
        group_size=8, prompts_per_iteration=8,            # ours
        rollout_batch_size=2, train_micro_batch=2,        # ours
        rewards={"video_clip_score": 1.0, "video_aesthetic": 0.1, "video_motion": 0.5},  # ours
        learning_rate=1e-4, clip_range=1e-4,              # clip: DanceGRPO
        gradient_checkpointing=True, iterations=300, eval_every=25, checkpoint_every=25,
        train_prompts="data/prompts/general_video_train.txt", test_prompts="data/prompts/general_video_test.txt",
        output_dir="runs/wan2.1-t2v-1.3b")


def wan2_2_t2v_a14b() -> Config:
    """Wan2.2-T2V-A14B: OTCA's video setup (review: 336x592x53 frames, 12 training steps, 32 H100s)."""
    c = wan2_1_t2v_1_3b()
    c.model, c.output_dir = "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "runs/wan2.2-t2v-a14b"
    c.height, c.width, c.frames, c.num_steps = 336, 592, 53, 12  # OTCA (review)
    c.group_size, c.prompts_per_iteration, c.rollout_batch_size, c.train_micro_batch = 8, 32, 1, 1  # ours
    return c


PRESETS = {"shapesworld-image": shapesworld_image, "shapesworld2-image": shapesworld2_image,
           "shapesworld2-image-parts": shapesworld2_image_parts, "shapesworld-video": shapesworld_video,
           "tiny-sd3": tiny_sd3, "tiny-sd3-pixel": tiny_sd3_pixel, "tiny-flux": tiny_flux, "tiny-wan": tiny_wan,
           "sd3.5-medium": sd3_5_medium, "flux.1-dev": flux_1_dev, "wan2.1-t2v-1.3b": wan2_1_t2v_1_3b,
           "wan2.2-t2v-a14b": wan2_2_t2v_a14b}


REPO = Path(__file__).resolve().parents[1]  # the checkout holding data/ (models and prompt files)


def preset(name: str) -> Config:
    """A named config. Its data/ paths (shipped models, prompt files) stay relative when the working folder
    has them (the repository root, as in the notebooks), and point into the checkout otherwise, so that a
    preset works from any folder."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    c = PRESETS[name]()
    for key in ("model", "train_prompts", "test_prompts"):
        value = getattr(c, key)
        if value.startswith("data/") and not Path(value).exists() and (REPO / value).exists():
            setattr(c, key, str(REPO / value))
    return c


def smoke(c: Config) -> Config:
    """Shrink a config to a run of seconds (CI): 2 iterations, 2 prompts x 2 samples, 3 steps."""
    return dataclasses.replace(c, iterations=2, num_steps=3, eval_num_steps=3, prompts_per_iteration=2,
                               group_size=2, eval_every=2, eval_samples=2, checkpoint_every=2)


def apply_overrides(c: Config, items: list[str]) -> Config:
    """Apply ``key=value`` strings (``--set``); values are parsed as JSON when possible (numbers, bools, dicts)."""
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    return with_changes(c, changes)


def with_changes(c: Config, changes: dict) -> Config:
    """A copy of c with the fields in ``changes`` replaced (a reproduction's ``overrides`` parameter, ``--set``).
    Every key must be a field and every value of the field's type (an int is taken for a float field)."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    checked = {}
    for key, value in changes.items():
        if key not in fields:
            raise ValueError(f"unknown config field {key!r}; fields are: {', '.join(fields)}")
        current = getattr(c, key)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ValueError(f"{key} expects true or false, got {value!r}")
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(current):
            raise ValueError(f"{key} expects a {type(current).__name__}, got {value!r}")
        checked[key] = value
    return dataclasses.replace(c, **checked)


# ----------------------------------------------------------------------------- batch arithmetic
def batch_arithmetic(c: Config, num_processes: int) -> dict[str, int]:
    """The derived sizes of one iteration; :func:`validate` checks that they divide evenly."""
    samples = c.prompts_per_iteration * c.group_size
    per_process = samples // num_processes
    trained = TrainedSteps.from_config(c).count
    pairs = per_process * trained
    return {
        "num_processes": num_processes,
        "samples_per_iteration": samples,
        "samples_per_process": per_process,
        "trained_steps_per_sample": trained,
        "pairs_per_process": pairs,
        "pairs_per_optimizer_step": pairs // c.optimizer_steps_per_iteration,
        "micro_batches_per_optimizer_step": -(-(pairs // c.optimizer_steps_per_iteration) // c.train_micro_batch),
        "transformer_calls_per_rollout": -(-per_process // c.rollout_batch_size) * c.num_steps,
    }


def validate(c: Config, num_processes: int = 1) -> None:
    """Raise ValueError listing every problem of the config, before any compute."""
    errors = _registry_problems(c) + _value_problems(c)
    errors += _batch_problems(c, num_processes, check_split=not errors)
    if errors:
        raise ValueError("invalid config:\n  - " + "\n  - ".join(errors))


def _registry_problems(c: Config) -> list[str]:
    """Mode fields that name nothing, rewards that are not registered, reward weights that are not usable."""
    from .credit import CREDIT_METHODS
    from .rewards import REWARDS

    checks = [(c.family in FAMILIES, f"family must be one of {FAMILIES}, got {c.family!r}"),
              (c.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {c.dtype!r}"),
              (c.sde in SDE_STEPS, f"sde must be one of {list(SDE_STEPS)}, got {c.sde!r}"),
              (c.train_steps in TRAIN_STEP_RULES, f"train_steps must be one of {TRAIN_STEP_RULES}, got {c.train_steps!r}"),
              (c.credit in CREDIT_METHODS, f"unknown credit method {c.credit!r}; choose one of {sorted(CREDIT_METHODS)}"),
              (bool(c.rewards), "rewards is empty: give at least one, e.g. --set 'rewards={\"brightness\": 1.0}'")]
    checks += [(name in REWARDS, f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}") for name in c.rewards]
    checks.append((c.tcd_space in TCD_SPACES, f"tcd_space must be one of {TCD_SPACES}, got {c.tcd_space!r}"))
    return [msg for ok, msg in checks if not ok]


def _value_problems(c: Config) -> list[str]:
    """Numbers outside their ranges (each field's docstring gives the range's reason) and non-finite floats."""
    from .credit import GRADIENT_LEVEL
    from .rewards import REWARDS

    numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in c.rewards.values())
    checks = [
        (c.tcd_window >= 1 and c.tcd_max_gain >= 0 and c.tcd_eps > 0, "tcd_window >= 1, tcd_max_gain >= 0, tcd_eps > 0"),
        (0 <= c.moca_lambda <= 1, f"moca_lambda must be in [0, 1], got {c.moca_lambda}"),
        (numbers, f"reward weights must be finite numbers, got {c.rewards}"),
        (not numbers or all(w > 0 for w in c.rewards.values()), "reward weights must be > 0 (drop a reward instead of weighting it 0)"),
        *((name in REWARDS, f"unknown eval metric {name!r}; registered rewards: {sorted(REWARDS)}") for name in c.eval_metrics),
        (c.oa_stride >= 1 and c.oa_every >= 1 and 0 < c.oa_sample_fraction <= 1 and 0 <= c.oa_ema < 1,
         "oa_stride >= 1, oa_every >= 1, oa_sample_fraction in (0, 1], oa_ema in [0, 1)"),
        (c.group_size >= 2, f"group_size must be >= 2 (advantages compare samples within a group), got {c.group_size}"),
        (c.prompts_per_iteration >= 1, "prompts_per_iteration must be >= 1"),
        (c.num_steps >= 2, f"num_steps must be >= 2 (the final step is deterministic), got {c.num_steps}"),
        (c.eval_num_steps >= 1, "eval_num_steps must be >= 1"),
        (c.learning_rate > 0, f"learning_rate must be > 0, got {c.learning_rate}"),
        (c.noise_level > 0, f"noise_level must be > 0 (0 is the ODE: no exploration, no log-prob), got {c.noise_level}"),
        (c.sde != "cps" or c.noise_level <= 1, "cps needs noise_level in (0, 1]"),
        (0 < c.train_fraction <= 1, "train_fraction must be in (0, 1]"),
        (c.window_size >= 1 and c.window_shift_every >= 1, "window_size and window_shift_every must be >= 1"),
        (c.clip_range > 0, "clip_range must be > 0"),
        (c.beta >= 0, "beta must be >= 0"),
        (0 <= c.ema_decay < 1, "ema_decay must be in [0, 1)"),
        (c.max_grad_norm >= 0, "max_grad_norm must be >= 0"),
        (c.credit not in GRADIENT_LEVEL or 0 <= c.mgda_floor <= 1 / max(1, len(c.rewards)),
         f"mgda_floor must be in [0, 1 / number of rewards] = [0, {1 / max(1, len(c.rewards)):.3f}], got {c.mgda_floor}"),
        (c.adv_rms >= 0, f"adv_rms must be >= 0 (0 keeps the advantages as they are), got {c.adv_rms}"),
        (c.adv_clip > 0 and c.adv_eps > 0, "adv_clip must be > 0 and adv_eps > 0 (with 0 a group of equal rewards "
         "divides 0 by 0)"),
        (c.max_nonfinite_steps >= 1, "max_nonfinite_steps must be >= 1"),
        (c.dist_timeout_minutes > 0, "dist_timeout_minutes must be > 0"),
        (c.lora_rank >= 0, f"lora_rank must be >= 0 (0 trains every weight), got {c.lora_rank}"),
        (c.seed >= 0, f"seed must be >= 0, got {c.seed}"),
        *((False, f"{f.name} must be finite, got {getattr(c, f.name)}") for f in dataclasses.fields(c)
          if isinstance(getattr(c, f.name), float) and not math.isfinite(getattr(c, f.name))),
        (c.height > 0 and c.width > 0 and c.frames >= 0, "height, width must be > 0 and frames >= 0"),
        (c.is_video == (c.family in VIDEO_FAMILIES),
         "frames > 0 exactly for the video families " + ", ".join(map(repr, VIDEO_FAMILIES))),
        (c.iterations >= 1, "iterations must be >= 1"),
        (c.rollout_batch_size >= 1 and c.train_micro_batch >= 1 and c.optimizer_steps_per_iteration >= 1,
         "rollout_batch_size, train_micro_batch, optimizer_steps_per_iteration must be >= 1"),
        (c.eval_every >= 0 and c.checkpoint_every >= 0 and c.eval_samples >= 1, "eval_every, checkpoint_every >= 0; eval_samples >= 1"),
        (not c.fsdp or (c.credit not in GRADIENT_LEVEL and c.conflict_every == 0),
         "fsdp=true cannot be combined with gradient_mgda or conflict_every > 0 (their per-objective gradients bypass "
         "FSDP's gradient reduce-scatter): train those unsharded"),
        (c.conflict_every >= 0, f"conflict_every must be >= 0 (0 never runs the conflict probe), got {c.conflict_every}"),
        (c.keep_checkpoints >= 0, f"keep_checkpoints must be >= 0 (0 keeps every checkpoint), got {c.keep_checkpoints}"),
    ]
    return [msg for ok, msg in checks if not ok]


def _batch_problems(c: Config, num_processes: int, check_split: bool) -> list[str]:
    """An iteration's samples must split evenly over the processes, and (when the rest is valid: check_split)
    each process's (sample, step) pairs evenly over the optimizer steps."""
    samples = c.prompts_per_iteration * c.group_size
    if samples % num_processes:
        return [f"prompts_per_iteration x group_size = {samples} samples must divide evenly over {num_processes} processes"]
    pairs = samples // num_processes * TrainedSteps.from_config(c).count if check_split else 0
    if pairs % c.optimizer_steps_per_iteration:
        return [f"{pairs} (sample, step) pairs per process do not split into {c.optimizer_steps_per_iteration} optimizer steps"]
    return []
