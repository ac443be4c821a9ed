"""Measure credit methods and their knobs on ShapesWorld: which defaults should OTCA have?

    python bench/credit_sweep.py [--preset shapesworld-image] [--seeds 0 1 2] [--iterations 30] [--jobs 2]
    python bench/credit_sweep.py --smoke            # seconds: checks the script (tests)

Each variant below is one `python -m otca_lib.train` run per seed (up to --jobs at once, each with
OMP_NUM_THREADS = cores / jobs; on a GPU several small runs share the card). Every run logs the base
model's held-out evaluation first and its own after the last iteration; the table prints the last one,
mean +- std over seeds, beside the base model, for the preset's rewards and their weighted total.
Runs already finished in --out are reused, so an interrupted sweep continues.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

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


def run(name: str, seed: int, args, threads: int) -> Path:
    credit, sets = VARIANTS[name]
    out = Path(args.out) / f"{name.replace(' ', '_')}_seed{seed}"
    if (out / "done.json").exists():
        return out
    cmd = [sys.executable, "-m", "otca_lib.train", "--preset", args.preset, "--credit", credit,
           "--output-dir", str(out), *(["--smoke"] if args.smoke else []),
           "--set", f"seed={seed}", "checkpoint_every=0", *sets,
           *([f"iterations={args.iterations}", f"eval_every={args.iterations}"] if not args.smoke else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    (out / "done.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}) + "\n")
    print(f"  {name} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return out


def evals(folder: Path) -> tuple[dict, dict]:
    rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in rows if "eval/total/mean" in r]
    pick = lambda r: {k[5:-5]: r[k] for k in r if k.startswith("eval/") and k.endswith("/mean")}  # noqa: E731
    return pick(ev[0]), pick(ev[-1])


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
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    jobs = [(v, s) for s in a.seeds for v in a.variants]  # seed-major: an interrupted sweep has every variant
    t0 = time.time()
    print(f"{len(jobs)} runs ({len(a.variants)} variants x {len(a.seeds)} seeds), {a.jobs} at a time", flush=True)
    with ThreadPoolExecutor(a.jobs) as pool:
        folders = dict(zip(jobs, pool.map(lambda j: run(*j, a, threads), jobs)))
    base = None
    results = {}
    for v in a.variants:
        per_seed = [evals(folders[(v, s)]) for s in a.seeds]
        base = base or {k: np.array([b[k] for b, _ in per_seed]) for k in per_seed[0][0]}
        results[v] = {k: np.array([e[k] for _, e in per_seed]) for k in per_seed[0][1]}
    keys = list(base)
    print(f"\n{a.preset}, {'smoke' if a.smoke else f'{a.iterations} iterations'}, seeds {a.seeds}: held-out mean +- std "
          f"over seeds ({time.time() - t0:.0f} s)\n")
    print("| variant | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for name, r in {"base model": base, **results}.items():
        print(f"| {name} | " + " | ".join(f"{r[k].mean():.3f} +- {r[k].std():.3f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
