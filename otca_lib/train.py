"""The training loop: sample -> reward -> advantage -> update, on accelerate, and its command line.

The same :class:`Trainer` runs in a notebook kernel (``Trainer(cfg).run()``), from the command line
(``python -m otca_lib.train --preset tiny-sd3``) and on several processes (``accelerate launch
--multi_gpu --num_processes 8 -m otca_lib.train ...`` or ``torchrun --nproc_per_node 8 -m otca_lib.train``).

Data layout of one iteration, over W processes: P prompts x G samples = N global samples, sample i
belongs to prompt group i // G, and process r holds samples [r N/W, (r+1) N/W). Groups may span
processes: rewards are gathered, every process computes the same advantages, and keeps its slice.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from . import checkpoint, fsdp
from .config import Config, apply_overrides, batch_arithmetic, preset, smoke, validate
from .credit import GRADIENT_LEVEL, CreditInput, CreditState, advantage, match_rms, objective_advantages
from .ema import EMA
from .groups import group_reward_stats
from .media import grid, save_grid
from .policy import ModelNotAvailable, load_policy
from .progress import CollectiveError, Progress
from .prompts import read_prompts
from .rewards import build_rewards, reward
from .sample import rollout_spec, sample
from .seeds import Stream, generator, sample_seed
from .steps import TrainedSteps
from .update import NonFiniteError, NonFiniteGuard, update


def finite_mean(r: torch.Tensor) -> float:
    """Mean of the finite entries (a failed reward is NaN and counted in */nonfinite); NaN if there are none."""
    ok = torch.isfinite(r)
    return float(r[ok].mean()) if ok.any() else float("nan")


def make_accelerator(timeout_minutes: float = 10.0) -> Accelerator:
    """accelerate's Accelerator; without CUDA it must be told to use the CPU, or torchrun's several
    processes would each believe they are alone (accelerate only forms a gloo group with cpu=True).

    timeout_minutes: how long a collective (gather, all-reduce, barrier) waits for a stuck process before
    it fails (torch's default is 30 minutes; config field dist_timeout_minutes)."""
    # find_unused_parameters: some trained weights get no gradient in some models (SD3's last block
    # computes context queries whose output it drops), which plain DDP treats as an error.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    group = InitProcessGroupKwargs(timeout=datetime.timedelta(minutes=timeout_minutes))
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp, group])


class RunFolderInUse(ValueError):
    """A fresh run was pointed at a folder that holds another run."""


class Trainer:
    def __init__(self, cfg: Config, accelerator: Accelerator | None = None, *, log: bool = True, policy=None,
                 overwrite: bool = False):
        """policy: an already built policy.Policy to train instead of loading cfg.model (e.g. in a notebook,
        or bench/gpu_check.py's random-init real architectures). overwrite: a fresh run may replace the run
        already in cfg.output_dir (its metrics, samples, checkpoints); without it that is an error."""
        self.acc = accelerator or make_accelerator(cfg.dist_timeout_minutes)
        self.progress = Progress(self.acc.process_index, self.acc.num_processes, cfg.dist_timeout_minutes)
        self.overwrite = overwrite
        validate(cfg, self.acc.num_processes)
        self.cfg = cfg
        self.arith = batch_arithmetic(cfg, self.acc.num_processes)
        self.out = Path(cfg.output_dir)
        self.say = print if (log and self.acc.is_main_process) else (lambda *a, **k: None)
        self.say("batch arithmetic: " + ", ".join(f"{k}={v}" for k, v in self.arith.items()))
        n = self.arith["samples_per_process"]
        assert n * self.acc.num_processes == self.arith["samples_per_iteration"]
        self.train_prompts, self.test_prompts = read_prompts(cfg.train_prompts), read_prompts(cfg.test_prompts)
        self.policy = policy or load_policy(cfg.family, cfg.model, dtype=getattr(torch, cfg.dtype),
                                            device=self.acc.device, lora_rank=cfg.lora_rank,
                                            lora_alpha=cfg.lora_alpha or None, keep_reference=cfg.beta > 0)
        self.policy.check_size(cfg.height, cfg.width, cfg.frames or None)
        if cfg.gradient_checkpointing:
            self.policy.unwrapped.enable_gradient_checkpointing()
        self.say(f"trainable parameters: {sum(p.numel() for p in self.policy.trainable_parameters()):,}")
        self._distribute()
        # Checkpoints are written by checkpoint.save (safetensors + JSON, no pickle), not accelerate's save_state.
        self.ema = EMA(self.policy.trainable_parameters(), cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.credit_state = CreditState()  # amortised estimates of the credit methods, checkpointed
        self.guard = NonFiniteGuard(cfg.max_nonfinite_steps)  # skipped non-finite optimizer steps, over the run
        self.reward_fns = build_rewards(cfg.rewards, self.acc.device)
        self.eval_metric_fns = build_rewards([k for k in cfg.eval_metrics if k not in cfg.rewards], self.acc.device)
        self.spec = rollout_spec(cfg, self.policy)                         # training rollouts: the SDE
        self.eval_spec = rollout_spec(cfg, self.policy, evaluation=True)   # held-out samples: the ODE
        self.trained_steps = TrainedSteps.from_config(cfg)
        self.balance = cfg.credit in GRADIENT_LEVEL  # the update combines per-objective gradients (gradient_mgda)
        self.start = 0
        self.history: list[dict] = []
        self._tb = None

    def _distribute(self) -> None:
        """DDP (accelerate's prepare) or, with cfg.fsdp and several processes, torch's FSDP2 (fsdp.py); then the
        optimizer over the trained weights as they are now (shards, when sharded)."""
        cfg, acc = self.cfg, self.acc
        if acc.distributed_type == DistributedType.FSDP:
            raise ValueError("accelerate's FSDP plugin is not used by this trainer: launch with configs/accelerate/"
                             "ddp.yaml (or --multi_gpu) and --set fsdp=true, which shards with torch's FSDP2 (fsdp.py)")
        if cfg.fsdp and acc.num_processes > 1:
            units = fsdp.shard(self.policy.transformer, acc.device, acc.num_processes)
            self.say(f"fsdp: {units} units sharded over {acc.num_processes} processes")
        optimizer = torch.optim.AdamW(self.policy.trainable_parameters(), lr=cfg.learning_rate,
                                      weight_decay=cfg.weight_decay)
        if fsdp.is_sharded(self.policy.trainable_parameters()):
            self.optimizer = optimizer
        else:
            self.policy.transformer, self.optimizer = acc.prepare(self.policy.transformer, optimizer)

    # ------------------------------------------------------------------ data layout
    def local_slice(self, n_global: int) -> slice:
        n = n_global // self.acc.num_processes
        return slice(self.acc.process_index * n, (self.acc.process_index + 1) * n)

    def prompts_for(self, it: int) -> tuple[list[str], torch.Tensor]:
        """The global batch of iteration ``it``: prompts [N] (each repeated G times) and group ids [N]."""
        P, G = self.cfg.prompts_per_iteration, self.cfg.group_size
        g = generator(self.cfg.seed, Stream.PROMPTS, it)
        order = torch.cat([torch.randperm(len(self.train_prompts), generator=g) for _ in range(-(-P // len(self.train_prompts)))])
        chosen = [self.train_prompts[i] for i in order[:P].tolist()]
        return [p for p in chosen for _ in range(G)], torch.arange(P).repeat_interleave(G)

    # ------------------------------------------------------------------ one iteration
    def iteration(self, it: int) -> dict[str, float]:
        c, acc, dev = self.cfg, self.acc, self.acc.device
        t0 = time.perf_counter()
        prompts, group = self.prompts_for(it)
        local = self.local_slice(len(prompts))
        idx = range(len(prompts))[local]
        seeds = [sample_seed(c.seed, Stream.SAMPLE, it, i) for i in idx]
        init = [sample_seed(c.seed, Stream.GROUP, it, int(group[i])) for i in idx] if c.shared_initial_noise else None
        # 1. sample
        self.progress.at(f"iteration {it}: sample")
        rollout = sample(self.policy, prompts[local], self.spec, trained=self.trained_steps.at(it), seeds=seeds,
                         init_seeds=init)
        t1 = time.perf_counter()
        # 2. reward (gathered: a prompt's group may span processes)
        self.progress.at(f"iteration {it}: reward")
        r_local = reward(self.reward_fns, rollout.pixels, prompts[local])
        with self.progress.collective(f"iteration {it}: reward gather"):
            rewards = {k: acc.gather(v.to(dev)) for k, v in r_local.items()}
        t2 = time.perf_counter()
        # 3. advantage
        self.progress.at(f"iteration {it}: advantage")
        inp = CreditInput(rewards, group.to(dev), local, rollout, c, it, self.score_latents, self.credit_state)
        adv, diag = advantage(c.credit, inp)
        probe = not self.balance and c.conflict_every > 0 and it % c.conflict_every == 0  # the conflict probe
        if c.adv_rms > 0:  # the same effective step size for every method (config adv_rms)
            with self.progress.collective(f"iteration {it}: advantage RMS all-reduce"):
                adv, diag["rms_before_matching"] = match_rms(adv, c.adv_rms, lambda t: acc.reduce(t, "sum"))
        t3 = time.perf_counter()
        # 4. update
        self.policy.transformer.train()
        with self.progress.collective(f"iteration {it}: update (forward, backward, gradient all-reduce)"):
            metrics = update(self.policy, self.optimizer, acc, rollout, adv, c, iteration=it, ema=self.ema, guard=self.guard,
                             balance=self.balance, conflict_adv=objective_advantages(inp) if probe else None)
        t4 = time.perf_counter()
        with self.progress.collective(f"iteration {it}: metrics all-reduce"):
            metrics = {k: float(acc.reduce(torch.tensor(v, device=dev), "mean")) for k, v in metrics.items()}
        metrics.update(self._reward_metrics(rewards, group.to(dev), "reward"))
        metrics.update({f"credit/{k}": float(v) for k, v in diag.items()})
        metrics.update({"perf/sec_per_iter": t4 - t0, "perf/sample_sec": t1 - t0, "perf/reward_sec": t2 - t1,
                        "perf/advantage_sec": t3 - t2, "perf/update_sec": t4 - t3})
        return metrics

    @torch.no_grad()
    def score_latents(self, latents: torch.Tensor, prompts: list) -> dict[str, torch.Tensor]:
        """Decode latents (M, *L) in rollout-sized batches and score them: {reward: [M]} (objective-aware credit)."""
        bs = self.cfg.rollout_batch_size
        pixels = torch.cat([self.policy.decode(latents[i:i + bs]) for i in range(0, len(latents), bs)])
        return reward(self.reward_fns, pixels, prompts)

    def _reward_metrics(self, rewards: dict, group: torch.Tensor, prefix: str) -> dict[str, float]:
        m, total, bad = {}, 0.0, torch.zeros_like(group, dtype=torch.bool)
        for k, r in rewards.items():
            bad |= ~torch.isfinite(r)
            m[f"{prefix}/{k}/mean"] = finite_mean(r)
            total = total + self.cfg.rewards[k] * r
        m[f"{prefix}/total/mean"] = finite_mean(total)
        m[f"{prefix}/nonfinite"] = float(bad.sum())
        if prefix == "reward":
            m.update({f"reward/{k}": v for k, v in group_reward_stats(total, group).items()})
        return m

    @torch.no_grad()
    def evaluate(self, it: int) -> dict[str, float]:
        """Deterministic (ODE) samples of held-out prompts with fixed seeds; EMA weights if enabled.

        Any eval_samples works on any number of processes: the list is padded (repeating its first samples)
        to a multiple of the process count, and the padding is dropped after the gather."""
        c, W = self.cfg, self.acc.num_processes
        n = c.eval_samples
        padded = range(-(-n // W) * W)
        prompts = [self.test_prompts[(i % n) % len(self.test_prompts)] for i in padded]
        seeds = [sample_seed(c.seed, Stream.EVAL, i % n) for i in padded]
        local = self.local_slice(len(prompts))
        self.progress.at(f"evaluation at iteration {it}")
        with self.ema.swapped() if self.ema is not None else contextlib.nullcontext():
            ro = sample(self.policy, prompts[local], self.eval_spec, seeds=seeds[local])
    
        def gathered(fns) -> dict[str, torch.Tensor]:
            scores = reward(fns, ro.pixels, prompts[local])
            with self.progress.collective(f"evaluation at iteration {it}: gather"):
                return {k: self.acc.gather(v.to(self.acc.device))[:n] for k, v in scores.items()}

        r = gathered(self.reward_fns)
        with self.progress.collective(f"evaluation at iteration {it}: gather"):
            pixels = self.acc.gather(ro.pixels.contiguous())[:n]
        if self.acc.is_main_process:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            save_grid(pixels.cpu(), self.out / "samples" / f"eval_{it:06d}")
            # TensorBoard: the same grid (a video's first frame), under the iteration it was evaluated at
            self.tensorboard().add_image("eval/samples", grid(pixels.cpu())[0], it, dataformats="HWC")
        m = self._reward_metrics(r, torch.arange(n, device=self.acc.device), "eval")
        for k, v in gathered(self.eval_metric_fns).items():  # measured, not trained on
            m[f"eval/{k}/mean"] = finite_mean(v)
        return m

    # ------------------------------------------------------------------ logging, checkpoints
    RUN_FILES = ("metrics.jsonl", "checkpoints", "samples", "tb", "config.json")

    def _claim_output_dir(self) -> None:
        """A fresh run must not splice itself into another run's folder: refuse, or with overwrite clear it."""
        found = [n for n in self.RUN_FILES[:2] if (self.out / n).exists()]
        if not found:
            return
        if not self.overwrite:
            raise RunFolderInUse(f"{self.out} already holds a run ({', '.join(found)}): resume it (--resume "
                                 f"{self.out}), choose another --output-dir, or pass --overwrite to replace it")
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            for name in self.RUN_FILES:
                target = self.out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        self.acc.wait_for_everyone()

    def log(self, it: int, metrics: dict) -> None:
        row = {"iteration": it, **metrics}
        self.history.append(row)
        if not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in metrics.items():
            self.tensorboard().add_scalar(k, v, it)
        self.tensorboard().flush()

    def tensorboard(self):
        """The run's TensorBoard writer (main process), made at first use; it starts with the config as text."""
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tb"))
            self._tb.add_text("config", "```\n" + json.dumps(self.cfg.to_dict(), indent=1) + "\n```", self.start)
        return self._tb

    def save(self, it: int) -> Path:
        with self.progress.collective(f"checkpoint at iteration {it}"):  # (the ranks meet before and after the write)
            return checkpoint.save(self.acc, self.policy, self.out, it, self.cfg.to_dict(), optimizer=self.optimizer,
                                   ema=self.ema, credit_state=self.credit_state, keep=self.cfg.keep_checkpoints)

    def resume(self, path: str | Path) -> int:
        """Load a checkpoint (verified; safetensors and JSON only) and continue after its iteration. -> that iteration.

        The optimizer's moments come from the checkpoint, its learning rate and weight decay from this
        trainer's config, so a value changed for the resumed run is the value it trains with."""
        ckpt = checkpoint.resolve(path)
        meta = checkpoint.verify(ckpt)
        checkpoint.load_trainable(self.policy, ckpt / checkpoint.TRAINABLE)
        checkpoint.load_training_state(ckpt, self.optimizer, self.ema, self.credit_state)
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = self.cfg.learning_rate, self.cfg.weight_decay
        self.start = meta["iteration"]
        log = self.out / "metrics.jsonl"
        if self.acc.is_main_process and log.exists():  # rows logged after the checkpoint are logged again
            rows = [line for line in log.read_text().splitlines() if json.loads(line)["iteration"] <= self.start]
            checkpoint._atomic_write_text(log, "".join(row + "\n" for row in rows))
        self.say(f"resumed from {ckpt} at iteration {self.start}")
        return self.start

    def _progress_line(self, done: int, m: dict, sec_per_it: float) -> None:
        """Where no progress bar can be seen (stderr not a terminal: a log file, papermill, a notebook's output), a
        text line on stderr about every tenth of the run: method, seed, iteration, s/it, ETA, reward (and the
        held-out total when this iteration evaluated)."""
        c = self.cfg
        every = max(1, c.iterations // 10)
        if not self.acc.is_main_process or sys.stderr.isatty() or (done % every and done != c.iterations):
            return
        eta = (c.iterations - done) * sec_per_it
        held_out = f", held-out total {m['eval/total/mean']:.4f}" if "eval/total/mean" in m else ""
        from tqdm.auto import tqdm

        tqdm.write(f"{c.credit} seed {c.seed}: iteration {done}/{c.iterations}, {sec_per_it:.2f} s/it, ETA "
                   f"{eta / 60:.1f} min, reward {m['reward/total/mean']:.4f}{held_out}", file=sys.stderr)  # (on its own line)

    def run(self) -> list[dict]:
        """Train from self.start to cfg.iterations; evaluate and checkpoint on schedule. Returns the metric rows."""
        from tqdm.auto import tqdm

        c = self.cfg
        if self.start == 0:
            self._claim_output_dir()
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=1))
        if self.start == 0 and c.eval_every:
            self.log(0, self.evaluate(0))  # the base model: the baseline every method is compared with
        # a bar where someone watches (a terminal, a notebook's widget); a log file gets only the text lines
        watched = sys.stderr.isatty() or "ipykernel" in sys.modules
        bar = tqdm(range(self.start, c.iterations), initial=self.start, total=c.iterations,
                   disable=not (self.acc.is_main_process and watched), desc=f"{c.credit} seed {c.seed}")
        t0 = time.perf_counter()
        for it in bar:
            m = self.iteration(it)
            done = it + 1
            if c.eval_every and (done % c.eval_every == 0 or done == c.iterations):
                m.update(self.evaluate(done))
            self.log(done, m)
            bar.set_postfix({"reward": f"{m['reward/total/mean']:.4f}", "s/it": f"{m['perf/sec_per_iter']:.2f}"})
            self._progress_line(done, m, (time.perf_counter() - t0) / (done - self.start))
            due = (c.checkpoint_every and done % c.checkpoint_every == 0) or done == c.iterations
            if due and self.guard.in_a_row == 0:  # never during a run of skipped (non-finite) steps
                self.save(done)
            elif due:
                self.say(f"iteration {done}: no checkpoint, its last optimizer step was skipped (non-finite gradient)")
        if self._tb is not None:
            self._tb.close()
        return self.history


# ---------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m otca_lib.train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny-sd3", help="named preset (config.PRESETS)")
    p.add_argument("--credit", help="credit assignment method (credit.CREDIT_METHODS)")
    p.add_argument("--iterations", type=int, help="total training iterations")
    p.add_argument("--output-dir", help="run folder for metrics, samples and checkpoints")
    p.add_argument("--resume", help="run folder or checkpoint folder to continue from (uses its saved config)")
    p.add_argument("--smoke", action="store_true", help="shrink the run to seconds (CI)")
    p.add_argument("--dry-run", action="store_true", help="validate, print batch arithmetic and model size, do not train")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    p.add_argument("--overwrite", action="store_true", help="a fresh run replaces the run already in --output-dir")
    return p.parse_args(argv)


def build_config(args) -> Config:
    """The run's config. With --resume: the saved one, with --set / --credit / --iterations applied, written
    to the folder being resumed (not the output_dir it was saved with: a copied run folder stays a copy)."""
    if args.resume:
        ckpt = checkpoint.resolve(args.resume)
        meta = checkpoint.verify(ckpt)
        if ckpt.parent.name != "checkpoints" and not args.output_dir:
            raise ValueError(f"{ckpt} is a checkpoint outside a run folder: give --output-dir for the resumed run")
        cfg = dataclasses.replace(Config(**meta["config"]), output_dir=str(ckpt.parent.parent))
        if args.iterations is not None and args.iterations <= meta["iteration"]:
            raise ValueError(f"--iterations {args.iterations}: {ckpt} is already at iteration {meta['iteration']}; "
                             "give a larger total to train on")
    else:
        cfg = preset(args.preset)
        if args.smoke:
            cfg = smoke(cfg)
    cfg = apply_overrides(cfg, args.set)
    changes = {k: v for k, v in (("credit", args.credit), ("iterations", args.iterations),
                                 ("output_dir", args.output_dir)) if v is not None}
    return dataclasses.replace(cfg, **changes)


def dry_run(cfg: Config, acc: Accelerator) -> int:
    """Print the config, its batch arithmetic and the model size; real checkpoints are built on the meta
    device (nothing downloaded) with a GPU memory estimate per process (memory.py). Trains nothing."""
    from . import memory

    if not acc.is_main_process:
        return 0
    print(json.dumps(cfg.to_dict(), indent=1))
    print("batch arithmetic: " + ", ".join(f"{k}={v}" for k, v in batch_arithmetic(cfg, acc.num_processes).items()))
    if cfg.model in memory.ARCHITECTURES:  # a real checkpoint: its architecture on the meta device, no weights
        print(memory.report(cfg, acc.num_processes))
    else:  # a tiny model or a local folder (the ShapesWorld models): small enough to load and count
        try:
            policy = load_policy(cfg.family, cfg.model, lora_rank=cfg.lora_rank, keep_reference=False)
            policy.check_size(cfg.height, cfg.width, cfg.frames or None)
        except (ValueError, ModelNotAvailable) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        total = sum(p.numel() for p in policy.unwrapped.parameters())
        print(f"transformer parameters: {total:,}; trainable: {sum(p.numel() for p in policy.trainable_parameters()):,}")
    print("dry run: config valid, not training")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        acc = make_accelerator(cfg.dist_timeout_minutes)
        validate(cfg, acc.num_processes)
    except (ValueError, checkpoint.CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(cfg, acc)
    try:
        trainer = Trainer(cfg, acc, overwrite=args.overwrite)
    except (ModelNotAvailable, FileNotFoundError, ValueError) as e:  # (ValueError: e.g. a size the model cannot take)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.resume:
        try:
            trainer.resume(args.resume)
        except checkpoint.CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.resume:
        print(f"resuming into {cfg.output_dir}", file=sys.stderr)
    try:
        trainer.run()
    except RunFolderInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (NonFiniteError, checkpoint.CheckpointError, CollectiveError) as e:  # diverged, or a process is stuck: stop
        # loudly, keep the last good checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 1
    acc.end_training()  # closes trackers and the process group (gloo aborts at exit otherwise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
