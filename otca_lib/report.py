"""A study's results page from its run folders: tables with 95 % CIs, paired tests against a baseline, sample
efficiency, wall time, held-out curves and where the credit went.

    python -m otca_lib.report results/image [--baseline grpo] [--out docs/results.md] [--title TEXT]
                              [--methods grpo otca ...] [--step-importance FILE.json ...]

The folder is what ``compare.train_runs`` (and so ``reproductions/*.ipynb``) writes: one ``{method}_seed{seed}``
folder per run with ``metrics.jsonl`` and ``done.json``. Only finished runs count, and only seeds that every method
finished (the tests are paired). Writes the markdown page and, beside it, ``<stem>_curves.png`` (held-out weighted
total over training, mean +- 95 % CI over seeds) and ``<stem>_steps.png`` (mean step weight per denoising step and
method, for the methods that log step credit). Objective-aware methods also get their per-objective step credit as
a table, beside where each objective is decided on the same model when --step-importance gives the JSON that
``bench/step_importance.py --json`` writes (the "why" of a credit method: did its credit go where the outcome
was decided?).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from . import compare
from .commands import command
from .stats import mean_ci


def finished_runs(folder: Path) -> dict[str, dict[int, dict]]:
    """{method: {seed: done.json}} of the finished runs in a study folder."""
    runs: dict[str, dict[int, dict]] = {}
    for done in sorted(Path(folder).glob("*_seed*/done.json")):
        d = json.loads(done.read_text())
        runs.setdefault(d["method"], {})[int(d["seed"])] = d
    if not runs:
        raise FileNotFoundError(f"{folder} holds no finished run ({{method}}_seed{{seed}}/done.json): train the study "
                                "first (compare.train_runs, or reproductions/image.ipynb with its output_dir)")
    return runs


# The ablation in the OTCA paper's layout (its Table 4): each row adds one part of the method to uniform GRPO.
ABLATION = {"grpo": "GRPO", "tcd": "+ TCD (step credit)", "moca": "+ MOCA (objective credit)",
            "otca": "+ TCD + MOCA (OTCA)", "otca_objective": "objective-aware OTCA (per-objective step credit)"}
# Logged diagnostics summarised per method (docs/metrics.md): mean over every iteration that logs it and every seed.
DIAGNOSTICS = {"credit/moca_cancelled": "MOCA cancelled (share of samples)",
               "conflict/against": "steps against some objective (share)"}


def train_seconds(folder: Path, method: str, seed: int) -> float:
    """A run's training time: the sum of its logged seconds per iteration (evaluations excluded; a resumed run's
    iterations are counted once, as metric_rows keeps the last row of each)."""
    return float(sum(r.get("perf/sec_per_iter", 0.0) for r in compare.metric_rows(folder, method, seed)))


def objective_order(res: compare.Results, cfg: dict) -> list[str]:
    """The table columns in the run config's order: the rewards, then the evaluation metrics (their parts), then
    the weighted total; anything else after them."""
    have = list(res.final[compare.BASELINE])
    named = [k for k in dict.fromkeys([*cfg.get("rewards", {}), *cfg.get("eval_metrics", [])]) if k in have]
    rest = [k for k in have if k not in named and k != "total"]
    return named + rest + (["total"] if "total" in have else [])


def ablation_table(res: compare.Results, objectives: list[str] | None = None) -> str | None:
    """The held-out table (mean +- 95 % CI) restricted to the ablation's methods, in its order and with its labels,
    under the base model's row; None unless the study has GRPO and at least one of the parts."""
    present = [m for m in ABLATION if m in res.final]
    if "grpo" not in present or len(present) < 2:
        return None
    final = {compare.BASELINE: res.final[compare.BASELINE], **{ABLATION[m]: res.final[m] for m in present}}
    return compare.table(compare.Results(res.iterations, {}, final, {}), objectives, ci=True)


def diagnostics_table(folder: Path, methods: list[str], seeds: list[int]) -> str | None:
    """Per method, the mean of each logged diagnostic (DIAGNOSTICS, and every objective's conflict/cosine/<name>)
    over its iterations and seeds; '-' where a method does not log it; None when no run logged any."""
    means: dict[str, dict[str, float]] = {}
    for m in methods:
        rows = [r for s in seeds for r in compare.metric_rows(folder, m, s)]
        keys = {k for r in rows for k in r if k in DIAGNOSTICS or k.startswith("conflict/cosine/")}
        means[m] = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    columns = sorted({k for v in means.values() for k in v}, key=lambda k: (list(DIAGNOSTICS) + [k]).index(k))
    if not columns:
        return None
    names = [DIAGNOSTICS.get(k, "cos(" + k.split("/")[-1] + ", step)") for k in columns]
    return compare.markdown("method", names, {m: [f"{v[k]:.3f}" if k in v else "-" for k in columns]
                                              for m, v in means.items()})


def plot_eval_curves(res: compare.Results, path: Path, objective: str = "total") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, curves in res.evals.items():
        stats = [mean_ci(curves[objective][:, i]) for i in range(curves[objective].shape[1])]
        m, h = np.array([s[0] for s in stats]), np.nan_to_num(np.array([s[1] for s in stats]))
        ax.plot(res.eval_iterations, m, marker=".", label=method)
        ax.fill_between(res.eval_iterations, m - h, m + h, alpha=0.2)
    ax.set_xlabel("iteration"), ax.set_ylabel(f"held-out {objective}"), ax.legend(fontsize=8)
    ax.set_title("held-out evaluation, mean +- 95 % CI over seeds", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def step_profile(folder: Path, method: str, seeds: list[int], num_steps: int, objective: str | None = None):
    """[num_steps] mean logged step weight per denoising step over the iterations that trained it and the seeds
    (compare.step_weights); NaN at steps never trained; None when the method logs no such weight."""
    W = np.concatenate([compare.step_weights(folder, method, s, num_steps, objective) for s in seeds])
    if np.isnan(W).all():
        return None
    trained = ~np.isnan(W)
    return np.where(trained.any(0), np.nansum(W, 0) / np.maximum(trained.sum(0), 1), np.nan)


def objective_credit_tables(folder: Path, runs: dict, seeds: list[int]) -> dict[str, str]:
    """{method: markdown table} of each objective-aware method's per-objective step credit (objective x step),
    mean over iterations and seeds."""
    tables = {}
    for method, by_seed in runs.items():
        cfg = by_seed[seeds[0]]["config"]
        T, objectives = cfg["num_steps"], list(cfg.get("rewards", {}))
        rows = {k: step_profile(folder, method, seeds, T, k) for k in objectives}
        rows = {k: v for k, v in rows.items() if v is not None}
        if rows:
            tables[method] = compare.markdown("objective \\ step", [str(t) for t in range(T)],
                                              {k: ["-" if np.isnan(x) else f"{x:.2f}" for x in v] for k, v in rows.items()})
    return tables


def read_importance(path: Path) -> dict:
    """A bench/step_importance.py --json file, checked for the fields the page uses."""
    imp = json.loads(Path(path).read_text())
    missing = [k for k in ("decided", "steps", "objectives", "sigmas", "spread") if k not in imp]
    if missing:
        raise ValueError(f"{path} is not a bench/step_importance.py --json file (no {missing}): write one with "
                         "python bench/step_importance.py --preset PRESET --json FILE")
    return imp


def importance_table(imp: dict) -> str:
    """The share of each objective's outcome decided at each step (read_importance), as markdown."""
    decided, spread0 = np.array(imp["decided"]), np.array(imp["spread"])[0]
    # an objective that hardly varies even from step 0 has shares of a near-0 spread: noise, so its spread is shown
    return compare.markdown("objective (spread at step 0) \\ step",
                            [f"{t} (sigma {s:.2f})" for t, s in zip(imp["steps"], imp["sigmas"])],
                            {f"{n} ({spread0[j]:.3f})": [f"{x:.2f}" for x in decided[:, j]]
                             for j, n in enumerate(imp["objectives"])})


def plot_step_weights(folder: Path, runs: dict, seeds: list[int], path: Path) -> Path | None:
    """Mean logged step weight per denoising step (over iterations and seeds), one row per method that logs it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for method, by_seed in runs.items():
        profile = step_profile(folder, method, seeds, by_seed[seeds[0]]["config"]["num_steps"])
        if profile is not None:
            rows[method] = profile
    if not rows:
        return None
    M = np.array(list(rows.values()))
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(rows)))
    im = ax.imshow(M, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(rows)), list(rows)), ax.set_xlabel("denoising step t (0 = pure noise)")
    fig.colorbar(im, label="mean step weight (uniform = 1)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def page(folder: Path, baseline: str, title: str, command_line: str, out: Path, methods: list[str] | None = None,
         importance: list[Path] | None = None) -> str:
    importance_md = [importance_section(p) for p in importance or []]  # a bad file fails before anything is read
    runs = finished_runs(folder)
    if methods:
        missing = [m for m in methods if m not in runs]
        if missing:
            raise ValueError(f"no finished run of {missing} in {folder} (finished: {sorted(runs)})")
        runs = {m: runs[m] for m in methods}
    seeds = sorted(set.intersection(*(set(s) for s in runs.values())))
    if not seeds:
        raise ValueError(f"no seed is finished for every method in {folder}: {({m: sorted(s) for m, s in runs.items()})}")
    methods = list(methods) if methods else ([baseline] if baseline in runs else []) + sorted(m for m in runs if m != baseline)
    res = compare.gather(folder, methods, seeds)
    order = objective_order(res, runs[methods[0]][seeds[0]]["config"])
    lines = [f"# {title}", "", f"Generated by `{command_line}` from {len(methods) * len(seeds)} finished runs in "
             f"`{folder}`: methods {', '.join(methods)}; seeds {seeds} (the same for every method: paired)."
             + (" **One seed only: no confidence intervals and no tests; a difference here may be seed noise.**"
                if len(seeds) == 1 else ""), "",
             "## Held-out results (last evaluation), mean +- 95 % CI over seeds", "", compare.table(res, order, ci=True), ""]
    if baseline in runs:
        lines += [f"## Difference to {baseline}, paired over seeds (* p < 0.05, two-sided t-test)", "",
                  compare.paired_table(res, baseline, order), ""]
        lines += efficiency_section(res, folder, methods, seeds, baseline)
    ablation = ablation_table(res, order)
    if ablation is not None:
        lines += ["## Ablation (the OTCA paper's Table 4 layout), held-out, mean +- 95 % CI over seeds", "", ablation, ""]
    diagnostics = diagnostics_table(folder, methods, seeds)
    if diagnostics is not None:
        lines += ["## Diagnostics, mean over iterations and seeds", "", "MOCA's cancellation rate "
                  "(`credit/moca_cancelled`: samples whose objectives' advantages disagree in sign, so the min-norm "
                  "combination is 0) and the conflict probe (`conflict_every`; gradient_mgda logs it at every step): "
                  "how often some objective's own policy gradient pointed against the update's gradient, and each "
                  "objective's mean cosine with it.", "", diagnostics, ""]
    curves = plot_eval_curves(res, out.with_name(out.stem + "_curves.png"))
    lines += ["## Held-out total over training", "", f"![held-out curves]({curves.name})", ""]
    return "\n".join(lines + credit_sections(folder, runs, seeds, out) + [x for md in importance_md for x in md])


def efficiency_section(res: compare.Results, folder: Path, methods: list[str], seeds: list[int], baseline: str) -> list[str]:
    """Iterations each method needs to reach the baseline's final held-out total, and its training time."""
    target = float(res.final[baseline]["total"].mean())
    start = float(res.final[compare.BASELINE]["total"].mean())
    reachable = target > start  # else the base model's evaluation already "reaches" it, at iteration 0
    lines = [f"## Sample efficiency: iterations to reach {baseline}'s final held-out total ({target:.3f})", ""]
    if not reachable:
        lines += [f"{baseline} ends at or below the base model's held-out total ({start:.3f}), so there is no "
                  "gain to reach sooner: only the training time is listed.", ""]
    lines += ["| method | iterations | x " + baseline + " | training time per run (s, mean) |", "|---|---|---|---|"]
    base_its = compare.iterations_to_reach(res, baseline, target)
    for m in methods:
        its = compare.iterations_to_reach(res, m, target) if reachable else None
        ratio = (f"{its / base_its:.2f}" if its is not None and base_its else "not reached") if reachable else "-"
        wall = np.mean([train_seconds(folder, m, s) for s in seeds])
        lines.append(f"| {m} | {(its if its is not None else 'not reached') if reachable else '-'} | {ratio} | {wall:.0f} |")
    return lines + ["", "Training time: the sum of the logged seconds of every iteration (`perf/sec_per_iter`: sample, "
                    "reward, advantage, update; held-out evaluations excluded), whole across interruptions and resumes; "
                    "runs trained side by side share the CPU, so compare it between methods of one study only.", ""]


def credit_sections(folder: Path, runs: dict, seeds: list[int], out: Path) -> list[str]:
    """Where the credit went: the step-weight heatmap and each objective-aware method's per-objective table."""
    lines = []
    steps = plot_step_weights(folder, runs, seeds, out.with_name(out.stem + "_steps.png"))
    if steps is not None:
        lines += ["## Where the step credit went", "", "Mean logged step weight per denoising step, over iterations "
                  "and seeds (`credit/weight/step_t`; uniform credit is 1 everywhere).", "", f"![step weights]({steps.name})", ""]
    for method, tab in objective_credit_tables(folder, runs, seeds).items():
        lines += [f"## {method}: each objective's own step credit", "", "Mean logged weight of objective k at step t "
                  "over iterations and seeds (`credit/weight/{k}/step_t`; '-' where no iteration trained the step).",
                  "", tab, ""]
    return lines


def importance_section(path: Path) -> list[str]:
    """Where each objective is decided, from one bench/step_importance.py --json file."""
    imp = read_importance(path)
    table = importance_table(imp)
    on = f"the trained checkpoint {imp['checkpoint']}" if imp.get("checkpoint") else "the base model"
    return [f"## Where each objective is decided, on {on}", "", f"From `{imp.get('command', 'bench/step_importance.py')}`: "
            "the share of each objective's spread over re-noised continuations that step t removes (its last "
            "column holds what is still open after the last re-noised step). The spread at step 0 (std over "
            "continuations) is beside each name: where it is near 0 the objective hardly varies at all and its "
            "shares are noise.", "", table, ""]


@command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m otca_lib.report", description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="a study folder: {method}_seed{seed} run folders (compare.train_runs)")
    ap.add_argument("--baseline", default="grpo")
    ap.add_argument("--out", default=None, help="the markdown page (default: FOLDER/results.md)")
    ap.add_argument("--title", default="Credit-assignment study")
    ap.add_argument("--methods", nargs="+", default=None, help="only these methods, in this order (default: every "
                    "method with a finished run, the baseline first)")
    ap.add_argument("--step-importance", nargs="+", default=None, help="bench/step_importance.py --json outputs on "
                    "the study's model or its checkpoints: where each objective is decided, shown beside the step credit")
    a = ap.parse_args(argv)
    out = Path(a.out or Path(a.folder) / "results.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python -m otca_lib.report " + shlex.join(argv if argv is not None else sys.argv[1:])  # quoted: copy-pastable
    out.write_text(page(Path(a.folder), a.baseline, a.title, cmd, out, a.methods, a.step_importance) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
