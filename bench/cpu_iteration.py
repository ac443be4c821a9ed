"""Time one GRPO iteration by phase and compare it with the bare transformer compute it contains.

    python bench/cpu_iteration.py [--preset tiny-sd3-pixel] [--iterations 5] [--set key=value ...]
    python bench/cpu_iteration.py --credit-table    # the cost of each credit method against uniform GRPO

Prints a table: seconds per phase (sample, reward, advantage, update), the iteration total, peak
memory, and the overhead ratio = iteration time / bare compute, where bare compute is the same
transformer calls with the same batch shapes and nothing else: the rollout's no-grad forwards and
the update's forward + backward passes (and, with a KL anchor, beta > 0, the reference policy's no-grad forward
on the same pairs, which the update needs). A ratio near 1 means the trainer adds little around the model.

With --credit-table it instead runs the same iterations (same seeds, so the same first rollout) with
every credit method and two rewards, and prints each method's advantage-phase time and its whole
iteration time relative to uniform GRPO ('grpo'). Goal: tcd, moca, otca <= 1.05x; otca_objective
<= 1.25x with its amortisation options.
"""
import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time

import torch

from otca_lib.config import apply_overrides, batch_arithmetic, preset
from otca_lib.credit import GRADIENT_LEVEL
from otca_lib.train import Trainer


def bare_compute(tr: Trainer, repeats: int) -> tuple[float, float]:
    """Seconds of (rollout forwards, update forward+backwards with the reference forward when beta > 0) for one
    iteration's shapes."""
    c, pol, a = tr.cfg, tr.policy, tr.arith
    n, shape = a["samples_per_process"], tr.spec.latent_shape
    cond = pol.encode_prompts(["a red circle"] * max(c.rollout_batch_size, c.train_micro_batch))
    params = pol.trainable_parameters()

    def fwd(batch):
        x = torch.randn(batch, *shape)
        s = torch.full((batch,), 0.5)
        return pol.velocity(x, s, {k: v[:batch] for k, v in cond.items()})

    sample_t, update_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            for lo in range(0, n, c.rollout_batch_size):
                for _ in range(c.num_steps):
                    fwd(min(c.rollout_batch_size, n - lo))
        t1 = time.perf_counter()
        pairs = a["pairs_per_process"]
        for lo in range(0, pairs, c.train_micro_batch):
            batch = min(c.train_micro_batch, pairs - lo)
            if c.beta > 0:  # the KL anchor's reference forward (update.pair_loss): part of the model's work
                with torch.no_grad(), pol.reference():
                    fwd(batch)
            fwd(batch).square().mean().backward()
        for p in params:
            p.grad = None
        t2 = time.perf_counter()
        sample_t.append(t1 - t0)
        update_t.append(t2 - t1)
    return statistics.median(sample_t), statistics.median(update_t)


CREDIT_RUNS = [("grpo", []), ("per_reward", []), ("gdpo", []), ("per_reward_loss", []), ("noise_weighted", []),
               ("tcd", []), ("moca", []), ("otca", []), ("otca_objective", []),
               ("otca_objective", ["oa_stride=3", "oa_sample_fraction=0.25", "oa_every=4"]), ("gradient_mgda", [])]


def credit_table(args) -> None:
    """Median iteration time of every credit method on the same preset, seeds and rewards. A method's own cost is in
    its advantage phase, and for gradient_mgda in its update (one backward pass per objective)."""
    rows = []
    for name, extra in CREDIT_RUNS:
        cfg = apply_overrides(preset(args.preset), ['rewards={"brightness": 1.0, "jpeg_compressibility": 0.05}',
                                                    f"credit={name}", *args.set, *extra])
        cfg = dataclasses.replace(cfg, iterations=args.iterations + 1, eval_every=0, checkpoint_every=0,
                                  output_dir=tempfile.mkdtemp(prefix="otca-bench-"))
        tr = Trainer(cfg, log=False)
        its = [tr.iteration(it) for it in range(args.iterations + 1)][1:]
        med = {k: statistics.median(r[f"perf/{k}"] for r in its) for k in ("advantage_sec", "update_sec", "sec_per_iter")}
        shared = statistics.median(r["perf/sample_sec"] + r["perf/reward_sec"] for r in its)
        rows.append((name + (" (" + ", ".join(extra) + ")" if extra else ""), med["advantage_sec"], med["update_sec"],
                     med["sec_per_iter"], shared))
    shared = statistics.median(r[4] for r in rows)  # sample + reward: the same work for every method
    # the update is the same work for every method that sums its losses; gradient_mgda's is its own
    summed = statistics.median(r[2] for r in rows if not r[0].startswith(GRADIENT_LEVEL))
    own = [(name, adv, upd if name.startswith(GRADIENT_LEVEL) else summed, it) for name, adv, upd, it, _ in rows]
    base = shared + own[0][1] + own[0][2]
    print(f"preset {args.preset}, rewards brightness + 0.05 jpeg_compressibility, median of {args.iterations} iterations, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<72}{'advantage s':>12}{'update s':>10}{'iteration s':>12}{'measured x':>11}{'phase-sum x':>12}")
    for (name, adv, upd, it, _), (_, _, upd_used, _) in zip(rows, own):
        print(f"{name:<72}{adv:>12.4f}{upd:>10.3f}{it:>12.3f}{it / rows[0][3]:>11.2f}"
              f"{(shared + adv + upd_used) / base:>12.3f}")
    print("measured x: the method's median iteration time / grpo's (includes timing noise of a few %);")
    print("phase-sum x: (median sample + reward time of all runs + the method's advantage time + the median update time of")
    print("the methods that sum their losses, or gradient_mgda's own update time) / the same for grpo")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny-sd3-pixel")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--credit-table", action="store_true", help="compare the cost of every credit method")
    args = p.parse_args()
    if args.credit_table:
        credit_table(args)
        return 0
    cfg = apply_overrides(preset(args.preset), args.set)
    cfg = dataclasses.replace(cfg, iterations=args.iterations + 1, eval_every=0, checkpoint_every=0,
                              output_dir=tempfile.mkdtemp(prefix="otca-bench-"))
    tr = Trainer(cfg, log=False)
    rows = [tr.iteration(it) for it in range(args.iterations + 1)][1:]  # the first one warms up
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith("perf/")}
    bare_s, bare_u = bare_compute(tr, args.iterations)
    arith = batch_arithmetic(cfg, 1)
    print(f"preset {args.preset}: {cfg.prompts_per_iteration} prompts x group {cfg.group_size} x {cfg.num_steps} steps "
          f"({arith['trained_steps_per_sample']} trained), {cfg.height}x{cfg.width}"
          f"{f'x{cfg.frames}f' if cfg.frames else ''}, torch threads {torch.get_num_threads()}, "
          f"median of {args.iterations} iterations")
    print(f"{'phase':<12}{'seconds':>10}{'bare compute':>14}{'ratio':>8}")
    print(f"{'sample':<12}{med['perf/sample_sec']:>10.3f}{bare_s:>14.3f}{med['perf/sample_sec'] / bare_s:>8.2f}")
    print(f"{'reward':<12}{med['perf/reward_sec']:>10.3f}{'':>14}{'':>8}")
    print(f"{'advantage':<12}{med['perf/advantage_sec']:>10.3f}{'':>14}{'':>8}")
    print(f"{'update':<12}{med['perf/update_sec']:>10.3f}{bare_u:>14.3f}{med['perf/update_sec'] / bare_u:>8.2f}")
    total = med["perf/sec_per_iter"]
    print(f"{'iteration':<12}{total:>10.3f}{bare_s + bare_u:>14.3f}{total / (bare_s + bare_u):>8.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MiB"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if torch.cuda.is_available() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
