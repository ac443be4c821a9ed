"""The repository's main job in a few minutes: GRPO and OTCA trained on the shipped ShapesWorld image model.

    python -m otca_lib.demo [--iterations 45] [--seed 0] [--jobs 2] [--out runs/demo]   (what `make demo` runs)

Both methods start from the same base model (ShapesWorld level 2, `data/models/shapesworld2-image`) with the
same seed, rewards and budget (the preset `shapesworld2-image`); each run evaluates the base model first and
then every third of the run on the 144 held-out prompts. Printed: a progress line per method (iteration, s/it,
ETA), then the held-out table beside the base model with each method's change. Written to `--out`: the runs,
`summary.md`, `reward_curves.png` (training reward and held-out total) and `samples.png` (held-out samples of the
base model and of each method, prompt under each). One seed: this shows the pipeline, not which method is better
(the reproduction's seeds do that: README).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from . import compare
from .config import preset, smoke
from .prompts import read_prompts

METHODS = ("grpo", "otca")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=45, help="iterations per method (3-6 s each on a 2-core CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/demo", help="folder of the two runs and the figures")
    # two runs side by side with one thread each finish sooner than one after the other with two threads: torch's
    # threads scale poorly on this tiny model (compare.train_configs; README: make demo)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs trained at once, each with cores / jobs threads (default: 2 where there are 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="the preset shrunk to seconds (tests)")
    a = ap.parse_args(argv)
    if a.jobs < 1:
        ap.error(f"--jobs {a.jobs}: give 1 (one run after the other) or more (runs side by side)")
    if a.iterations < 3:
        ap.error(f"--iterations {a.iterations}: give at least 3 (the run is evaluated every third of it)")
    every = a.iterations // 3
    cfg = preset("shapesworld2-image")
    cfg = dataclasses.replace(smoke(cfg) if a.smoke else cfg, iterations=a.iterations, eval_every=every,
                              checkpoint_every=every)
    out = Path(a.out)
    threads = compare.child_threads(a.jobs) or torch.get_num_threads()
    print(f"demo: {', '.join(METHODS)} on {cfg.model}, seed {a.seed}, {a.iterations} iterations each, {a.jobs} "
          f"run(s) at once with {threads} torch thread(s) each (set --jobs, or OMP_NUM_THREADS with --jobs 1)",
          file=sys.stderr)
    t0 = time.time()
    try:
        compare.train_runs(cfg, list(METHODS), [a.seed], out, jobs=a.jobs)
    except ValueError as e:  # a folder of a demo run with other settings: never mixed in
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = compare.gather(out, list(METHODS), [a.seed])
    header = (f"Demo: {cfg.model}, seed {a.seed}, {a.iterations} iterations per method; held-out (144 prompts) "
              f"after the last iteration.")
    table = compare.write_summary(out, res, header, weights=cfg.rewards)
    base = res.final[compare.BASELINE]
    print("\n" + table + "\n")
    for method in METHODS:
        change = ", ".join(f"{k} {float(res.final[method][k].mean() - base[k].mean()):+.3f}" for k in base)
        print(f"{method} - base: {change}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    compare.plot_curves(res, ax, title=f"{cfg.model}, seed {a.seed}")
    fig.savefig(out / "reward_curves.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    grid = compare.captioned_samples(res, read_prompts(cfg.test_prompts), cfg.eval_samples, cfg.height, out)
    print(f"\nwrote {out / 'summary.md'}, {out / 'reward_curves.png'}, {grid} in {time.time() - t0:.0f} s; "
          "one seed shows the pipeline, not which method is better (README: the reproduction)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
