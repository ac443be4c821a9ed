"""Measure credit methods and their knobs on ShapesWorld: which defaults should OTCA have?

    python bench/credit_sweep.py [--preset shapesworld-image] [--seeds 0 1 2] [--iterations 30] [--jobs 2]
    python bench/credit_sweep.py --smoke            # seconds: checks the script (tests)

Each variant below is one training run per seed of the preset with the variant's credit method and config
changes, trained by `otca_lib.compare.train_configs` (the reproductions' machinery: up to --jobs runs at once,
each with OMP_NUM_THREADS = cores / jobs; finished runs in --out are reused and interrupted ones resumed, so an
interrupted sweep continues). Every run logs the base model's held-out evaluation first and its own after the
last iteration; the table prints the last one, mean +- std over seeds, beside the base model, for the preset's
rewards and their weighted total.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

from otca_lib import compare
from otca_lib.config import apply_overrides, preset, smoke

# name -> (credit method, config overrides); the OTCA defaults are tcd_space=latent, tcd_window=1, moca_lambda=0.3
VARIANTS = {
    "grpo": ("grpo", []),
    "per_reward": ("per_reward", []),
    "noise_weighted": ("noise_weighted", []),
    "tcd": ("tcd", []),
    "moca": ("moca", []),
    "otca": ("otca", []),
    "otca x0_hat": ("otca", ["tcd_space=x0_hat"]),
    "otca window 2": ("otca", ["tcd_window=2"]),
    "otca lambda 0": ("otca", ["moca_lambda=0.0"]),
    "otca lambda 1": ("otca", ["moca_lambda=1.0"]),
    "otca_objective": ("otca_objective", []),
}


def folder_name(variant: str) -> str:
    return variant.replace(" ", "_")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="shapesworld-image")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--out", default="results/credit_sweep")
    ap.add_argument("--smoke", action="store_true", help="the preset's smoke size (2 iterations)")
    a = ap.parse_args(argv)
    base = smoke(preset(a.preset)) if a.smoke else preset(a.preset)
    base = base if a.smoke else dataclasses.replace(base, iterations=a.iterations, eval_every=a.iterations)
    runs = {}
    for s in a.seeds:  # seed-major: an interrupted sweep has every variant of its first seeds
        for v in a.variants:
            folder = compare.run_dir(Path(a.out), folder_name(v), s)
            credit, sets = VARIANTS[v]
            runs[folder] = apply_overrides(dataclasses.replace(base, credit=credit, seed=s, output_dir=str(folder)), sets)
    t0 = time.time()
    print(f"{len(runs)} runs ({len(a.variants)} variants x {len(a.seeds)} seeds), {a.jobs} at a time", flush=True)
    compare.train_configs(runs, jobs=a.jobs)
    res = compare.gather(Path(a.out), [folder_name(v) for v in a.variants], a.seeds)
    res.final = {compare.BASELINE: res.final[compare.BASELINE],
                 **{v: res.final[folder_name(v)] for v in a.variants}}  # the variants' own names in the table
    print(f"\n{a.preset}, {'smoke' if a.smoke else f'{a.iterations} iterations'}, seeds {a.seeds}: held-out mean +- std "
          f"over seeds ({time.time() - t0:.0f} s)\n")
    print(compare.table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
