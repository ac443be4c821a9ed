"""The reproduction notebooks run headless with papermill at smoke size (as on a cluster, but tiny)."""
import json
import os
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def test_image_reproduction_smoke(tmp_path):
    out = tmp_path / "results"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pm.execute_notebook(str(ROOT / "reproductions/image.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters={"smoke": True, "output_dir": str(out), "seeds": [0, 1]},
                        cwd=str(ROOT / "reproductions"), progress_bar=False, kernel_name="python3")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"grpo", "otca"}
    assert {"sw_alignment", "sw_quality", "sw_aesthetic", "total"} <= set(summary["grpo"])
    assert (out / "reward_curves.png").exists() and (out / "samples.png").exists()
    assert "| method |" in (out / "summary.md").read_text()
