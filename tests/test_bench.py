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
