"""The tutorial notebooks: committed without outputs, and they run end to end (nbval, OTCA_SMOKE=1).

CI runs the notebooks with ``OTCA_SMOKE=1 pytest --nbval-lax notebooks/``; the test below does the same
in a subprocess so that ``make test`` covers them too. nbval's lax mode executes every cell and fails on
any error (the notebooks check their hand-written code against the library with asserts); it compares
no outputs.
"""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("reproductions/*.ipynb")])
MODELS = [ROOT / "data/models/shapesworld-image", ROOT / "data/models/shapesworld2-image", ROOT / "data/models/shapesworld-video"]
CLEAN = "clear it with: jupyter nbconvert --clear-output --inplace {path}"


def test_the_tutorial_notebooks_exist():
    names = {p.name for p in ROOT.glob("notebooks/*.ipynb")}
    assert {"01_trajectory_sampling.ipynb", "02_step_importance.ipynb", "03_multi_objective_weighting.ipynb",
            "04_image_grpo_vs_otca.ipynb", "05_video_grpo_vs_otca.ipynb", "06_scaling_up.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    rel = path.relative_to(ROOT)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{rel}: code cells {dirty} have outputs or execution counts; " + CLEAN.format(path=rel)
    assert "widgets" not in nb.metadata, (
        f"{rel} stores widget state in its metadata; delete metadata['widgets'] (and turn off Settings > "
        "Save Widget State Automatically in JupyterLab)")


def test_notebooks_run_under_nbval_at_smoke_size():
    for model in MODELS:
        if not (model / "model_index.json").exists():
            pytest.fail(f"the ShapesWorld model {model.relative_to(ROOT)} is missing (it is shipped with the repository; "
                        "data/README.md gives the python -m otca_lib.pretrain command that rebuilds it)")
    # One intra-op thread unless told otherwise: on a 2-core machine shared with another busy process, torch's
    # default 2 threads made the smoke runs ~10x slower (oversubscription); one thread costs little here.
    env = {"OMP_NUM_THREADS": "1", **os.environ, "OTCA_SMOKE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
           "notebooks/"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}"
