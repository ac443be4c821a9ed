"""The reproduction notebooks run headless with papermill at smoke size (as on a cluster, but tiny)."""
import json
import os
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind,objectives", [("image", {"sw2_alignment", "sw2_quality", "sw2_aesthetic", "sw2_pattern", "total"}),
                                             ("video", {"sw_motion", "sw_direction", "sw_consistency", "total"})])
def test_reproduction_smoke(tmp_path, kind, objectives):
    out = tmp_path / "results"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = dict(parameters={"smoke": True, "output_dir": str(out), "seeds": [0, 1], "overrides": {"noise_level": 0.5}},
               cwd=str(ROOT / "reproductions"), progress_bar=False, kernel_name="python3")
    pm.execute_notebook(str(ROOT / f"reproductions/{kind}.ipynb"), str(tmp_path / "out.ipynb"), **run)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["base model", "grpo", "otca"]
    assert objectives <= set(summary["grpo"]) and len(summary["grpo"]["total"]) == 2  # one value per seed
    assert (out / "reward_curves.png").exists() and (out / "samples.png").exists()
    assert json.loads((out / "grpo_seed0" / "config.json").read_text())["noise_level"] == 0.5  # overrides reach the runs
    table = (out / "summary.md").read_text()
    assert "| base model |" in table and "| otca |" in table
    assert "| change vs base model |" in table and "total = 1 x " in table  # what total weighs, and the changes
    # a rerun finds every run finished and only gathers: the same table
    (out / "summary.md").unlink()
    pm.execute_notebook(str(ROOT / f"reproductions/{kind}.ipynb"), str(tmp_path / "again.ipynb"), **run)
    assert (out / "summary.md").read_text() == table
