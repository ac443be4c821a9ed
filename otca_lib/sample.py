"""Rollouts (phase 1 of an iteration: sample -> reward -> advantage -> update).

A rollout integrates the policy from pure noise (s = 1) to a clean sample (s = 0) over the schedule
s_0 = 1 > s_1 > ... > s_T = 0, taking a stochastic step (sde.py) at the *trained* steps and an ODE step
elsewhere, and records what the update and the credit methods need: every state, every predicted
clean sample x0_hat, the log-probability of every stochastic transition, and the schedule.

Randomness is drawn per sample from generators keyed by the sample's seed (seeds.py): the initial noise
from (init seed, INIT_NOISE) and the noise of stochastic step t from (seed, STEP_NOISE, t), so the two
are independent, step t's noise does not depend on which other steps are stochastic, and a sample's
trajectory is the same whether the batch runs on one process or is split over eight, and whatever the
rollout batch size. Drawing noise sample by sample is the only per-sample loop; every transformer call
is batched.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .commands import command, load
from .media import write_samples
from .prompts import read_prompts
from .sde import SDE, ode_step
from .seeds import Stream, generator, sample_seed


@dataclass(frozen=True)
class RolloutSpec:
    """How rollouts are drawn, built once from the config (:func:`rollout_spec`): the schedule, the sample shape,
    the stochastic step of the trained steps, guidance and batching. Which steps are trained changes from
    iteration to iteration (steps.TrainedSteps) and is passed to :func:`sample` on its own."""
    sigmas: torch.Tensor          # [T + 1] float32, s_0 = 1 (or the scheduler's first level) ... s_T = 0
    latent_shape: tuple           # L = (C, H, W) for images, (C, F, H, W) for videos
    sde: SDE | None = None        # the step of the trained steps; None: deterministic samples (every step ODE)
    guidance_scale: float = 1.0   # classifier-free guidance; 1 disables it (no unconditional half)
    batch_size: int = 8           # samples per transformer call


def rollout_spec(cfg, policy, *, evaluation: bool = False) -> RolloutSpec:
    """A config's training rollouts (num_steps, its SDE) or, with ``evaluation``, its deterministic held-out
    samples (eval_num_steps, ODE only): the same size, guidance and batch size."""
    num_steps = cfg.eval_num_steps if evaluation else cfg.num_steps
    return RolloutSpec(policy.sigmas(num_steps, cfg.height, cfg.width),
                       policy.latent_shape(cfg.height, cfg.width, cfg.frames or None),
                       None if evaluation else SDE(cfg.sde, cfg.noise_level), cfg.guidance_scale, cfg.rollout_batch_size)


@dataclass
class Rollout:
    """One process's trajectories. B samples, T steps, K trained steps, latent shape L = (C, H, W) or (C, F, H, W)."""
    prompts: list             # [B] prompt strings
    cond: dict                # encoded prompts, each tensor [B, ...]
    uncond: dict | None       # encoded empty prompts [B, ...] when CFG is on, else None
    spec: RolloutSpec         # how it was drawn (its sigmas on the rollout's device); the update scores with its SDE
    states: torch.Tensor      # [B, T + 1, *L] float32: states[:, t] is the input of step t, states[:, T] the sample
    x0_hat: torch.Tensor      # [B, T, *L] float32: the clean sample predicted at step t
    log_probs: torch.Tensor   # [B, T] float32: log p(states[:, t+1] | states[:, t]); 0 at ODE steps
    trained: torch.Tensor     # [K] long, sorted: the stochastic, trained step indices
    step_std: torch.Tensor    # [T] float32: the std of each step's Gaussian (0 at ODE steps); equal over samples
    seeds: list               # [B] the per-sample noise seeds (identify a sample whatever its batch position)
    pixels: torch.Tensor | None = None  # decoded final samples in [0, 1], (B, 3, H, W) or (B, 3, F, H, W)

    @property
    def sigmas(self) -> torch.Tensor:
        """[T + 1] the schedule, s_0 ... s_T = 0."""
        return self.spec.sigmas

    def conditioning(self, idx) -> tuple[dict, dict | None]:
        """(cond, uncond) of the samples idx (a slice or [N] long indices): what the policy was conditioned on."""
        return select(self.cond, idx), select(self.uncond, idx)


def select(encoded: dict | None, idx) -> dict | None:
    """The rows idx (a slice or [N] long indices) of encoded prompts {name: [B, ...]}; None stays None."""
    return None if encoded is None else {k: v[idx] for k, v in encoded.items()}


def draw(generators: list[torch.Generator], shape, device) -> torch.Tensor:
    """One standard normal draw per sample, each from its own generator. -> (len(generators), *shape)."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def initial_noise(init_seeds: list[int], shape, device) -> torch.Tensor:
    """The initial states x at s = 1 of samples with these (initial-noise) seeds: (len(init_seeds), *shape)."""
    return draw([generator(s, Stream.INIT_NOISE) for s in init_seeds], shape, device)


def step_noise(seeds: list[int], t: int, shape, device) -> torch.Tensor:
    """The standard normal noise of stochastic step t of samples with these seeds: (len(seeds), *shape)."""
    return draw([generator(s, Stream.STEP_NOISE, t) for s in seeds], shape, device)


@torch.no_grad()
def sample(policy, prompts: list, spec: RolloutSpec, *, seeds: list[int], trained: torch.Tensor | None = None,
           init_seeds: list[int] | None = None, decode: bool = True) -> Rollout:
    """Roll out len(prompts) trajectories as ``spec`` says, in batches of spec.batch_size, and record them.

    seeds: [B] per-sample seeds (the SDE noise of step t is step_noise(seeds, t)); init_seeds: [B] seeds of
    the initial noise (initial_noise(init_seeds); defaults to seeds, and is equal within a group for shared
    initial noise). trained: [K] step indices that take spec.sde's stochastic step (None or empty: every
    step is an ODE step, a deterministic sample).
    """
    B, T = len(prompts), len(spec.sigmas) - 1
    device = policy.unwrapped.device
    trained = torch.empty(0, dtype=torch.long) if trained is None else trained
    if len(trained) and spec.sde is None:
        raise ValueError("trained steps need a stochastic step: build the spec with an SDE (rollout_spec(cfg, policy))")
    spec = dataclasses.replace(spec, sigmas=spec.sigmas.float().to(device))
    sigmas, L = spec.sigmas, spec.latent_shape
    is_sde = torch.zeros(T, dtype=torch.bool)
    is_sde[trained] = True
    cond = policy.encode_prompts(prompts)
    uncond = policy.encode_prompts([""] * B) if spec.guidance_scale != 1.0 else None
    states = torch.empty(B, T + 1, *L, device=device)
    x0_hat = torch.empty(B, T, *L, device=device)
    log_probs = torch.zeros(B, T, device=device)
    step_std = torch.zeros(T, device=device)
    init_seeds = seeds if init_seeds is None else init_seeds
    for lo in range(0, B, spec.batch_size):
        sl = slice(lo, min(lo + spec.batch_size, B))
        x = initial_noise(init_seeds[sl], L, device)
        c, u = select(cond, sl), select(uncond, sl)
        states[sl, 0] = x
        for t in range(T):
            s = sigmas[t].expand(x.shape[0])
            v = policy.guided_velocity(x, s, c, u, spec.guidance_scale)
            x0_hat[sl, t] = x - sigmas[t] * v
            if is_sde[t]:
                step = spec.sde.step(x, v, sigmas[t], sigmas[t + 1], noise=step_noise(seeds[sl], t, L, device))
            else:
                step = ode_step(x, v, sigmas[t], sigmas[t + 1])
            x = step.x_next
            step_std[t] = step.std.flatten()[0]
            states[sl, t + 1] = x
            log_probs[sl, t] = step.log_prob
    rollout = Rollout(list(prompts), cond, uncond, spec, states, x0_hat, log_probs, trained.to(device), step_std,
                      list(seeds))
    if decode:
        rollout.pixels = torch.cat([policy.decode(states[i:i + spec.batch_size, T]) for i in range(0, B, spec.batch_size)])
    return rollout


def sde_rollout(policy, cfg, prompts: list, seed: int = 0, batch_size: int = 64) -> Rollout:
    """Roll out prompts as a config trains them, every step but the last stochastic (cfg's schedule, SDE, noise
    level, guidance, size); sample i is the trainer's sample i of iteration 0 with run seed ``seed``
    (sample_seed(seed, Stream.SAMPLE, 0, i)). For measurements on a model (bench/, notebooks)."""
    spec = dataclasses.replace(rollout_spec(cfg, policy), batch_size=batch_size)
    return sample(policy, prompts, spec, trained=torch.arange(cfg.num_steps - 1),
                  seeds=[sample_seed(seed, Stream.SAMPLE, 0, i) for i in range(len(prompts))])


@torch.no_grad()
def generate(cfg, policy, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """Deterministic (ODE) samples of a config, one per (prompt, seed): pixels in [0, 1] on the CPU."""
    return sample(policy, prompts, rollout_spec(cfg, policy, evaluation=True), seeds=seeds).pixels.cpu()


# ---------------------------------------------------------------------- command line
@command
def main(argv=None) -> int:
    """python -m otca_lib.sample --preset NAME --prompts FILE --out DIR [--checkpoint DIR] [--seed N]: one file per
    sample (PNG per image; GIF plus a .npy array (3, F, H, W) in [0, 1] per video) and index.json listing each
    file with its prompt and seed (media.write_samples), drawn like the trainer's held-out evaluation."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m otca_lib.sample", description="Write samples of a prompt file.")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--prompts", required=True, help="prompt file, one prompt per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", help="a training run or checkpoint folder (default: the base model)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg, policy = load(a.preset, a.checkpoint)
    prompts = read_prompts(a.prompts)
    seeds = [sample_seed(a.seed, Stream.EVAL, i) for i in range(len(prompts))]
    print(f"wrote {write_samples(generate(cfg, policy, prompts, seeds), prompts, seeds, Path(a.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
