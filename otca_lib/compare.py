"""Compare credit-assignment methods over seeds: train every run, gather the held-out results, tabulate.

Used by the reproductions (``reproductions/image.ipynb``, ``video.ipynb``) and notebooks 04 / 05:

    runs = train_runs(base_cfg, ["grpo", "otca"], seeds=[0, 1], out=Path("results/image"))
    res = gather(Path("results/image"), ["grpo", "otca"], [0, 1])
    print(table(res))

Each run writes to ``out/{method}_seed{seed}`` (metrics.jsonl, samples/, checkpoints) and, once finished, a
``done.json`` holding its config: a rerun skips finished runs and resumes an interrupted one from its last
checkpoint, and refuses a folder whose run was made with another config (changed parameters never get
the old run's numbers under their name). The
baseline is the held-out evaluation of the base model (iteration 0, identical for every method of a seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, resolve, verify
from .stats import mean_ci, paired_test
from .train import Trainer

BASELINE = "base model"


def list_parameter(name: str, value, kind: type) -> list:
    """A notebook parameter that must be a list (methods, seeds). papermill's `-p seeds '[0, 1]'` passes the text
    '[0, 1]', not a list: JSON text is parsed here; anything else is refused with the way to pass a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a non-empty list of {kind.__name__} values, e.g. -y '{name}: "
                         f"{'[grpo, otca]' if kind is str else '[0, 1, 2]'}' or -p {name} "
                         f"'{json.dumps(['grpo', 'otca'] if kind is str else [0, 1, 2])}'")
    return value


def run_dir(out: Path, method: str, seed: int) -> Path:
    return Path(out) / f"{method}_seed{seed}"


def train_runs(base, methods: list[str], seeds: list[int], out: Path, num_processes: int = 1,
               accelerate_config: str = "configs/accelerate/ddp.yaml", jobs: int = 1) -> None:
    """Train base (a Config) once per method and seed into ``run_dir(out, method, seed)`` (train_configs)."""
    # seed by seed: a study stopped part-way holds every method of its first seeds (paired)
    runs = {run_dir(out, m, s): dataclasses.replace(base, credit=m, seed=s, output_dir=str(run_dir(out, m, s)))
            for s in seeds for m in methods}
    train_configs(runs, num_processes, accelerate_config, jobs)


def child_threads(jobs: int) -> int | None:
    """OMP_NUM_THREADS of each child when `jobs` runs train at once: cores // jobs (at least 1); None for jobs = 1
    (one run at a time keeps torch's own thread count)."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


def train_configs(runs: dict, num_processes: int = 1, accelerate_config: str = "configs/accelerate/ddp.yaml",
                  jobs: int = 1) -> None:
    """Train every {folder: Config} in order (each config's output_dir is its folder): in this process
    (num_processes = jobs = 1), or each run as a child process (`python -m otca_lib.train`, through `accelerate
    launch` when num_processes > 1), up to `jobs` runs at once. With jobs > 1 each child gets OMP_NUM_THREADS =
    cores // jobs: on a small CPU, runs side by side with one thread each finish sooner than the same runs one
    after another with all threads (torch's threads scale poorly on tiny models; README). A finished folder
    (done.json) is skipped and an interrupted one resumed from its last checkpoint; every folder is checked before
    anything trains, so a config mismatch is reported at once, not after hours."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1 (runs trained at once), got {jobs}")
    pending = []
    for folder, cfg in runs.items():
        folder = Path(folder)
        if (folder / "done.json").exists():
            done = json.loads((folder / "done.json").read_text())
            if done.get("config") != cfg.to_dict():
                changed = sorted(k for k, v in cfg.to_dict().items() if done.get("config", {}).get(k) != v)
                raise ValueError(f"{folder} holds a finished run with another config (differs in {changed}): "
                                 "give another output_dir, or delete the folder to retrain it")
            continue  # finished earlier, with this config
        last = _last_checkpoint(folder)
        meta = verify(last) if last is not None else None
        if meta is not None and meta["config"] != cfg.to_dict():
            raise ValueError(f"{folder} holds an interrupted run with another config: give another output_dir, "
                             "or delete the folder to retrain it")
        # its iteration is read now: the resumed run prunes that checkpoint once it has saved newer ones
        pending.append((cfg, folder, last, meta["iteration"] if meta else None))
    if num_processes == 1 and jobs == 1:
        for run in pending:
            _train_here(*run)
        return
    threads = child_threads(jobs)
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(_train_child, *run, num_processes, accelerate_config, threads) for run in pending]
        for future in as_completed(futures):
            if future.exception() is not None:  # stop queued runs; the running ones finish (and checkpoint)
                for f in futures:
                    f.cancel()
                raise future.exception()


def _train_here(cfg, folder: Path, last, resumed: int | None) -> None:
    start = time.time()
    # no checkpoint yet: a run interrupted before its first one restarts from scratch (overwrite)
    tr = Trainer(cfg, overwrite=last is None)
    if last is not None:
        tr.resume(last)
    tr.run()
    _mark_done(cfg, folder, resumed, start)


def _train_child(cfg, folder: Path, last, resumed: int | None, num_processes: int, accelerate_config: str,
                 threads: int | None) -> None:
    sets = [f"{k}={json.dumps(v)}" for k, v in cfg.to_dict().items()]
    launcher = (["-m", "accelerate.commands.launch", "--config_file", accelerate_config, "--num_processes",
                 str(num_processes)] if num_processes > 1 else [])
    cmd = [sys.executable, *launcher, "-m", "otca_lib.train",
           *(["--resume", str(last)] if last is not None else ["--overwrite"]), "--set", *sets]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.time()
    proc = subprocess.run(cmd, env=env)  # the trainer's progress lines stream to the caller's output
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg.credit} seed {cfg.seed} failed (exit {proc.returncode}; its error is printed "
                           f"above); rerun to resume it from its last checkpoint in {folder}")
    _mark_done(cfg, folder, resumed, start)


def _mark_done(cfg, folder: Path, resumed: int | None, start: float) -> None:
    (folder / "done.json").write_text(json.dumps({"method": cfg.credit, "seed": cfg.seed, "config": cfg.to_dict(),
                                                  "seconds": round(time.time() - start, 1),
                                                  "resumed_from_iteration": resumed}) + "\n")


def _last_checkpoint(folder: Path):
    try:
        return resolve(folder)
    except CheckpointError:
        return None


def metric_rows(out: Path, method: str, seed: int) -> list[dict]:
    """The run's metric rows by iteration; a resumed run re-logs iterations after its checkpoint: the last wins."""
    lines = (run_dir(out, method, seed) / "metrics.jsonl").read_text().splitlines()
    by_it = {r["iteration"]: r for r in map(json.loads, lines)}
    return [by_it[i] for i in sorted(by_it)]


@dataclasses.dataclass
class Results:
    iterations: list[int]                        # training iterations of the curves
    curves: dict[str, np.ndarray]                # method -> [seeds, iterations] training reward (weighted sum)
    final: dict[str, dict[str, np.ndarray]]      # method (and BASELINE) -> objective -> [seeds] last held-out mean
    samples: dict[str, list[Path]]               # method (and BASELINE) -> evaluation grids of seed 0, in order
    eval_iterations: list[int] = dataclasses.field(default_factory=list)  # iterations of the held-out evaluations
    evals: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)  # method -> objective ->
    #                                              [seeds, evaluations]: the held-out means over training (0 = base)


def step_weights(out: Path, method: str, seed: int, num_steps: int, objective: str | None = None):
    """A run's logged step credit as an array [training iterations, num_steps]: credit/weight/step_t of every
    iteration (mean 1 over the steps trained in it), NaN where step t was not trained (docs/metrics.md). With
    `objective`, that objective's own step credit (credit/weight/{objective}/step_t, objective-aware methods)."""
    key = "credit/weight/" + (f"{objective}/" if objective else "") + "step_{}"
    rows = [r for r in metric_rows(out, method, seed) if "reward/total/mean" in r]
    return np.array([[r.get(key.format(t), np.nan) for t in range(num_steps)] for r in rows])


def gather(out: Path, methods: list[str], seeds: list[int]) -> Results:
    """Read every run's metrics.jsonl: training curves and the first (base) and last held-out evaluations."""
    def means(evals, pick):  # objective -> [seeds] of the pick-th evaluation row of every seed
        keys = sorted(k for k in evals[0][pick] if k.startswith("eval/") and k.endswith("/mean"))
        return {k[5:-5]: np.array([e[pick][k] for e in evals]) for k in keys}

    curves, final, samples, its, curves_eval, eval_its = {}, {}, {}, None, {}, []
    for method in methods:
        runs = [metric_rows(out, method, s) for s in seeds]
        train_rows = [[r for r in run if "reward/total/mean" in r] for run in runs]
        its = [r["iteration"] for r in train_rows[0]]
        curves[method] = np.array([[r["reward/total/mean"] for r in rows] for rows in train_rows])
        evals = [[r for r in run if "eval/total/mean" in r] for run in runs]
        if not final:  # iteration 0: the base model, the same for every method of a seed
            final[BASELINE] = means(evals, 0)
            samples[BASELINE] = sorted((run_dir(out, method, seeds[0]) / "samples").glob("eval_*"))[:1]
        final[method] = means(evals, -1)
        samples[method] = sorted((run_dir(out, method, seeds[0]) / "samples").glob("eval_*"))
        n = min(len(e) for e in evals)  # (every seed evaluates at the same iterations; a shorter one cuts the curve)
        eval_its = [r["iteration"] for r in evals[0][:n]]
        curves_eval[method] = {o: np.stack([means(evals, i)[o] for i in range(n)], 1) for o in final[method]}
    return Results(its, curves, final, samples, eval_its, curves_eval)


def paired_table(res: Results, baseline: str = "grpo", objectives: list[str] | None = None) -> str:
    """Markdown table of each method minus `baseline` over the same seeds: mean difference +- 95 % CI and the
    paired t-test's p-value; * marks p < 0.05."""
    objectives = objectives or list(res.final[baseline])

    def cell(c: dict) -> str:
        if c["n"] < 2:  # one pair: no interval, no test
            return f"{c['diff']:+.3f} (1 seed)"
        return f"{c['diff']:+.3f} +- {c['ci95']:.3f} (p {c['p']:.2f})" + ("*" if c["p"] < 0.05 else "")

    return markdown(f"method - {baseline}", objectives,
                     {name: [cell(paired_test(f[o], res.final[baseline][o])) for o in objectives]
                      for name, f in res.final.items() if name not in (baseline, BASELINE)})


def iterations_to_reach(res: Results, method: str, target: float, objective: str = "total") -> int | None:
    """The first evaluation iteration at which `method`'s held-out `objective`, mean over seeds, reaches `target`
    (e.g. grpo's final score: a credit method should need at most half of grpo's iterations); None if never."""
    curve = res.evals[method][objective].mean(0)
    hits = np.nonzero(curve >= target)[0]
    return int(res.eval_iterations[hits[0]]) if len(hits) else None


def markdown(corner: str, objectives: list[str], rows: dict[str, list[str]]) -> str:
    """A markdown table: a header of objectives, one row of cells per name."""
    lines = [f"| {corner} | " + " | ".join(objectives) + " |", "|" + "---|" * (len(objectives) + 1)]
    return "\n".join([*lines, *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items())])


def table(res: Results, objectives: list[str] | None = None, ci: bool = False) -> str:
    """Markdown table: rows = base model and methods, columns = objectives, cells = mean +- std over seeds, or with
    ci the mean +- the half-width of its 95 % confidence interval (Student's t, stats.py)."""
    objectives = objectives or list(next(iter(res.final.values())))
    spread = (lambda v: mean_ci(v)[1]) if ci else (lambda v: v.std())
    fmt = lambda v: f"{v.mean():.3f}" + (f" +- {spread(v):.3f}" if len(v) > 1 else "")  # noqa: E731 (one seed: no spread)
    return markdown("method", objectives, {name: [fmt(f[o]) for o in objectives] for name, f in res.final.items()})


def plot_curves(res: Results, ax, title: str = "") -> None:
    """Per method, mean +- std over seeds: the training reward of every iteration (line; SDE rollouts of training
    prompts) and the held-out total of every evaluation (dashed, dots; ODE samples of held-out prompts, iteration 0
    the base model). Both are the weighted sum of the rewards."""
    for method, r in res.curves.items():
        m, s = r.mean(0), r.std(0)
        line, = ax.plot(res.iterations, m, label=f"{method}, training")
        ax.fill_between(res.iterations, m - s, m + s, alpha=0.15, color=line.get_color())
        if method in res.evals and "total" in res.evals[method]:
            e = res.evals[method]["total"]
            em, es = e.mean(0), e.std(0)
            ax.plot(res.eval_iterations, em, "o--", color=line.get_color(), label=f"{method}, held-out")
            ax.fill_between(res.eval_iterations, em - es, em + es, alpha=0.15, color=line.get_color(), hatch="//")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted total of the rewards")
    ax.set_title(title)
    ax.legend(fontsize=7)


def change_table(res: Results, objectives: list[str] | None = None) -> str:
    """Markdown table of each method's change against the base model (mean over seeds of last - first evaluation)."""
    objectives = objectives or list(res.final[BASELINE])
    base = res.final[BASELINE]
    return markdown("change vs base model", objectives, {name: [f"{(f[o] - base[o]).mean():+.3f}" for o in objectives]
                                                          for name, f in res.final.items() if name != BASELINE})


def write_summary(out: Path, res: Results, header: str, weights: dict | None = None) -> str:
    """summary.md (the table under a header, what "total" weighs, each method's change against the base model) and
    summary.json (per-seed values) in out; returns the table."""
    t = table(res)
    total = ("\n\ntotal = " + " + ".join(f"{w:g} x {k}" for k, w in weights.items())) if weights else ""
    Path(out, "summary.md").write_text(header + total + "\n\n" + t + "\n\n" + change_table(res) + "\n")
    Path(out, "summary.json").write_text(json.dumps(
        {name: {o: v.tolist() for o, v in f.items()} for name, f in res.final.items()}, indent=1) + "\n")
    return t


def captioned_samples(res: Results, prompts: list[str], samples: int, size: int, out: Path, n: int = 8) -> Path | None:
    """samples.png: n held-out samples from across the prompt list, of the base model and of each method's last
    evaluation (a video's first frame), the prompt under each column. They are tiles of the trainer's evaluation grid
    (8 per row), whose tile i is held-out prompt i (mod the number of prompts): the same tile is the same prompt and
    noise in every row. A method whose first seed's run holds no evaluation grid (a study folder that keeps only the
    runs' records, as results/ does) gets no row; None when no run has one."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = {name: np.asarray(Image.open(files[-1]).convert("RGB")) for name, files in res.samples.items() if files}
    if not rows:
        return None
    m = min(samples, len(prompts))
    tiles = sorted({(37 * i) % m for i in range(n)})  # a stride of 37: mixed sizes, patterns and positions
    fig, axes = plt.subplots(len(rows), len(tiles), figsize=(1.25 * len(tiles), 1.5 * len(rows)), squeeze=False)
    for r, (name, grid) in enumerate(rows.items()):
        for ax, k in zip(axes[r], tiles):
            y, x = divmod(k, 8)
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(grid[y * size:(y + 1) * size, x * size:(x + 1) * size], interpolation="nearest")
            if r == len(rows) - 1:
                ax.set_xlabel(textwrap.fill(prompts[k].removeprefix("a "), 15), fontsize=6)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=120)
    plt.close(fig)
    return out / "samples.png"
