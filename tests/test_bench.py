"""The benchmark scripts run (they print tables; no timing is asserted)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cpu_benchmark_prints_its_table():
    out = run("bench/cpu_iteration.py", "--iterations", "1", "--set", "num_steps=3", "group_size=2")
    assert "iteration" in out and "ratio" in out and "peak resident memory" in out


def test_gpu_check_code_path_on_tiny_models():
    out = run("bench/gpu_check.py", "--tiny")
    assert out.count("MFU") == 2 and "tiny-wan" in out


def test_gpu_check_real_architecture_path_cut_to_one_block():
    out = run("bench/gpu_check.py", "--preset", "wan2.1-t2v-1.3b", "--layers", "1", "--iterations", "1", "--set",
              "height=64", "width=64", "frames=5", "group_size=2", "num_steps=3", "rollout_batch_size=2",
              "train_micro_batch=2")
    assert "480x832" not in out and "64x64x5f" in out and "MFU" in out


def test_credit_sweep_prints_the_table(tmp_path):
    out = run("bench/credit_sweep.py", "--smoke", "--variants", "grpo", "otca lambda 0", "--seeds", "0",
              "--out", str(tmp_path))
    assert "| base model |" in out and "| otca lambda 0 |" in out
    done = tmp_path / "otca_lambda_0_seed0" / "done.json"
    assert '"moca_lambda": 0.0' in done.read_text()  # the variant's change is in the run's config
    stamp = done.stat().st_mtime_ns
    again = run("bench/credit_sweep.py", "--smoke", "--variants", "otca lambda 0", "--seeds", "0", "--out", str(tmp_path))
    assert "| otca lambda 0 |" in again and done.stat().st_mtime_ns == stamp  # the finished run reused, not retrained


def test_conflict_and_step_importance_measurements_run(tmp_path):
    out = run("bench/reward_conflict.py", "--prompts", "2", "--group", "3")
    assert "within-group correlation" in out and "mixed-sign" in out
    shares = {line.split()[0]: float(line.split()[1]) for line in out.split("by part:\n")[1].split("\n\n")[0].splitlines()}
    # the level-2 alignment is split into its five attributes; the parts add up to the whole variance
    assert set(shares) == {"sw2_color", "sw2_shape", "sw2_position", "sw2_size", "sw2_pattern", "sw2_quality",
                           "sw2_aesthetic"} and abs(sum(shares.values()) - 1) < 1e-4
    out = run("bench/step_importance.py", "--preset", "shapesworld-image", "--trajectories", "2", "--repeats", "2",
              "--json", str(tmp_path / "imp.json"))
    assert "share of the outcome decided at step k" in out and out.count("\n 6 ") == 2
    from otca_lib.report import importance_table, read_importance  # the study report reads what the script wrote
    table = importance_table(read_importance(tmp_path / "imp.json"))
    assert table.count("\n") == 1 + 6 and "| color (" in table and "6 (sigma" in table  # 6 objectives x 7 steps


def test_variance_shares_split_the_total_by_part():
    """Closed form: a part constant within every group has share 0; parts carrying the same signal split it
    equally, and one that is constant within groups gets 0; an 'alignment' that is not its parts' mean is refused."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from reward_conflict import variance_shares

    group = torch.arange(2).repeat_interleave(3)
    x = torch.tensor([0.0, 1.0, 2.0, 5.0, 3.0, 1.0])
    flat = group.float()  # constant within each group
    attrs = {"sw2_color": x, "sw2_shape": x, "sw2_position": x, "sw2_size": x, "sw2_pattern": flat}
    r = {**attrs, "sw2_alignment": torch.stack(list(attrs.values())).mean(0), "sw2_quality": flat}
    shares = variance_shares(r, {"sw2_alignment": 1.0, "sw2_quality": 0.5}, group)
    assert shares == pytest.approx({"sw2_color": 0.25, "sw2_shape": 0.25, "sw2_position": 0.25, "sw2_size": 0.25,
                                    "sw2_pattern": 0.0, "sw2_quality": 0.0})
    r["sw2_alignment"] = x  # not the mean of its five attributes
    with pytest.raises(ValueError, match="not the mean"):
        variance_shares(r, {"sw2_alignment": 1.0}, group)
