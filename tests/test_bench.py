"""The benchmark scripts run (they print tables; no timing is asserted)."""
import os
import subprocess
import sys
from pathlib import Path

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
    again = run("bench/credit_sweep.py", "--smoke", "--variants", "grpo", "--seeds", "0", "--out", str(tmp_path))
    assert "grpo seed 0:" not in again  # the finished run was reused, not retrained


def test_conflict_and_step_importance_measurements_run():
    out = run("bench/reward_conflict.py", "--prompts", "2", "--group", "3")
    assert "within-group correlation" in out and "mixed-sign" in out
    out = run("bench/step_importance.py", "--preset", "shapesworld-image", "--trajectories", "2", "--repeats", "2")
    assert "share of the outcome decided at step k" in out and out.count("\n 6 ") == 2
