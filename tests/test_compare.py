"""compare.py's statistics over seeds, on run folders written by hand (closed-form numbers)."""
import json

import numpy as np

from otca_lib import compare


def write_run(out, method, seed, evals: list[tuple[int, float]], step_weights: dict | None = None,
              logged: dict | None = None):
    """A run folder whose metrics.jsonl holds training rows (with the `logged` metrics: {name: value at iteration
    it, a function of it}) and held-out evaluations of 'total' at the iterations."""
    folder = compare.run_dir(out, method, seed)
    (folder / "samples").mkdir(parents=True)
    rows = {it: {"iteration": it} for it in range(evals[-1][0] + 1)}  # as the trainer logs: one row an iteration
    for it in range(1, evals[-1][0] + 1):
        rows[it]["reward/total/mean"] = 0.1 * it
        rows[it]["perf/sec_per_iter"] = 0.5 + 0.1 * seed
        rows[it].update({f"credit/weight/step_{t}": w for t, w in (step_weights or {}).items()})
        rows[it].update({k: f(it) for k, f in (logged or {}).items()})
    for it, v in evals:
        rows[it].update({"eval/total/mean": v, "eval/x/mean": 2 * v})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.values() if len(r) > 1))


def test_paired_statistics_and_sample_efficiency(tmp_path):
    base = {0: 1.0, 1: 1.2, 2: 0.9}
    for seed, b in base.items():  # grpo gains 0.1, 0.2, 0.3; otca the same plus 0.1, reaching grpo's final by it 10
        write_run(tmp_path, "grpo", seed, [(0, b), (10, b + 0.05), (20, b + 0.1 * (seed + 1))])
        write_run(tmp_path, "otca", seed, [(0, b), (10, b + 0.1 * (seed + 1) + 0.05), (20, b + 0.1 * (seed + 1) + 0.1)])
    res = compare.gather(tmp_path, ["grpo", "otca"], [0, 1, 2])
    assert res.eval_iterations == [0, 10, 20] and res.evals["otca"]["total"].shape == (3, 3)
    np.testing.assert_allclose(res.final["otca"]["total"] - res.final["grpo"]["total"], 0.1)
    table = compare.paired_table(res, objectives=["total"])
    assert "| otca | +0.100 +- 0.000 (p 0.00)* |" in table  # the same gain on every seed: no spread, p 0
    ci = compare.table(res, objectives=["total"], ci=True)
    m, h = np.mean([1.1, 1.4, 1.2]), 4.302653 * np.std([1.1, 1.4, 1.2], ddof=1) / np.sqrt(3)
    assert f"| grpo | {m:.3f} +- {h:.3f} |" in ci
    target = res.final["grpo"]["total"].mean()
    assert compare.iterations_to_reach(res, "grpo", target) == 20
    assert compare.iterations_to_reach(res, "otca", target) == 10   # half of grpo's iterations
    assert compare.iterations_to_reach(res, "otca", 99.0) is None


def test_the_report_page_from_run_folders(tmp_path):
    from otca_lib import report

    base = {0: 1.0, 1: 1.2, 2: 0.9}
    for seed, b in base.items():
        for method, gain in (("grpo", 0.0), ("otca", 0.1)):
            logged = {"credit/moca_cancelled": lambda it: 0.25, "conflict/against": lambda it: float(it % 2),
                      "conflict/cosine/x": lambda it: 0.5} if method == "otca" else None
            write_run(tmp_path, method, seed, [(0, b), (10, b + gain + 0.05), (20, b + 0.1 + gain)],
                      {0: 1.5, 2: 0.5} if method == "otca" else None, logged)
            (compare.run_dir(tmp_path, method, seed) / "done.json").write_text(json.dumps(
                {"method": method, "seed": seed, "config": {"num_steps": 4}, "seconds": 10.0 + seed}))
    write_run(tmp_path, "moca", 0, [(0, 1.0), (20, 1.0)])  # unfinished (no done.json): left out
    out = tmp_path / "docs" / "results.md"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "seeds [0, 1, 2]" in text and "| moca |" not in text and "moca_seed0" not in text
    assert "| otca | +0.200 +- 0.000 (p 0.00)* | +0.100 +- 0.000 (p 0.00)* |" in text  # x, then the total
    assert "| otca | 10 | 0.50 | 12 |" in text  # half of grpo's iterations; training time 20 x (0.5, 0.6, 0.7) s
    assert (tmp_path / "docs" / "results_curves.png").stat().st_size > 0
    assert "![step weights](results_steps.png)" in text and (tmp_path / "docs" / "results_steps.png").exists()
    base_row = next(line for line in text.splitlines() if line.startswith("| base model |"))
    assert "| + TCD + MOCA (OTCA) | " in text and "| GRPO | " in text and text.count(base_row) == 2  # the ablation
    # diagnostics: otca's means over iterations 1-20 and seeds (against: every other iteration); grpo logs none
    assert "| otca | 0.250 | 0.500 | 0.500 |" in text and "| grpo | - | - | - |" in text
    assert report.main([str(tmp_path / "empty")]) == 2         # no finished run: a clear error, exit 2


def test_no_sample_efficiency_target_when_grpo_ends_below_the_base_model(tmp_path):
    """The base model's evaluation (iteration 0) would 'reach' such a target at once: it is said, not tabulated."""
    from otca_lib import report

    for method, final in (("grpo", 0.8), ("otca", 0.9)):
        write_run(tmp_path, method, 0, [(0, 1.0), (10, final)])
        (compare.run_dir(tmp_path, method, 0) / "done.json").write_text(json.dumps(
            {"method": method, "seed": 0, "config": {"num_steps": 4}, "seconds": 5.0}))
    out = tmp_path / "results.md"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "grpo ends at or below the base model's held-out total (1.000)" in text
    assert "| otca | - | - | 5 |" in text and "| otca | 0 |" not in text  # training time 10 x 0.5 s


def test_report_shows_each_objectives_step_credit_beside_where_it_is_decided(tmp_path):
    from otca_lib import report

    for method in ("grpo", "otca_objective"):
        logged = {"credit/weight/x/step_0": lambda it: 1.5 + (it % 2),   # mean 2.0 over iterations 1-20
                  "credit/weight/x/step_2": lambda it: 0.5} if method == "otca_objective" else None
        write_run(tmp_path, method, 0, [(0, 1.0), (20, 1.1)], logged=logged)
        (compare.run_dir(tmp_path, method, 0) / "done.json").write_text(json.dumps(
            {"method": method, "seed": 0, "config": {"num_steps": 4, "rewards": {"x": 1.0, "y": 0.5}}, "seconds": 5.0}))
    imp = tmp_path / "importance.json"
    imp.write_text(json.dumps({"steps": [0, 1, 2], "sigmas": [1.0, 0.8, 0.5], "objectives": ["color", "pattern"],
                               "decided": [[0.7, 0.1], [0.2, 0.3], [0.1, 0.6]], "spread": [[0.2, 0.01]] * 3,
                               "checkpoint": None}))
    trained = tmp_path / "importance_trained.json"  # the same measurement on a trained checkpoint
    trained.write_text(imp.read_text().replace('"checkpoint": null', '"checkpoint": "study/otca_seed0"'))
    out = tmp_path / "results.md"
    assert report.main([str(tmp_path), "--out", str(out), "--step-importance", str(imp), str(trained)]) == 0
    text = out.read_text()
    assert "decided, on the trained checkpoint study/otca_seed0" in text
    assert "| method | x | total |" in text  # columns in the config's order (rewards first), the total last
    assert "## otca_objective: each objective's own step credit" in text
    assert "| x | 2.00 | - | 0.50 | - |" in text and "| y |" not in text   # y logs no step credit: no row
    assert "| color (0.200) | 0.70 | 0.20 | 0.10 |" in text and "| pattern (0.010) | 0.10 | 0.30 | 0.60 |" in text
    assert "2 (sigma 0.50)" in text and "decided, on the base model" in text
    # --methods picks and orders; a method without a finished run, or a file that is not step importance: exit 2
    assert report.main([str(tmp_path), "--out", str(out), "--methods", "otca_objective"]) == 0
    assert "| grpo |" not in out.read_text() and "each objective's own step credit" in out.read_text()
    assert report.main([str(tmp_path), "--out", str(out), "--methods", "grpo", "tcd"]) == 2
    assert report.main([str(tmp_path), "--out", str(out)]) == 0  # one seed: values without spread, no test
    text = out.read_text()
    assert "One seed only" in text and "nan" not in text and "| otca_objective | +0.000 (1 seed) | +0.000 (1 seed) |" in text
    imp.write_text(json.dumps({"steps": [0]}))
    assert report.main([str(tmp_path), "--out", str(out), "--step-importance", str(imp)]) == 2


def test_sample_grid_leaves_out_runs_that_keep_only_their_records(tmp_path):
    """results/ keeps each run's records without its sample grids: the grid shows the runs that have them, and
    a study with none gives None instead of an IndexError at the notebook's last cell."""
    from PIL import Image

    for method in ("grpo", "otca"):
        write_run(tmp_path, method, 0, [(0, 1.0), (10, 1.1)])
    res = compare.gather(tmp_path, ["grpo", "otca"], [0])
    assert compare.captioned_samples(res, ["a red circle"] * 8, 8, 4, tmp_path) is None
    for name in ("eval_000000.png", "eval_000010.png"):  # grids of 8 tiles of 4 x 4 pixels
        Image.new("RGB", (32, 4)).save(compare.run_dir(tmp_path, "otca", 0) / "samples" / name)
    res = compare.gather(tmp_path, ["grpo", "otca"], [0])
    assert compare.captioned_samples(res, ["a red circle"] * 8, 8, 4, tmp_path) == tmp_path / "samples.png"
