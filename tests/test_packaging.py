"""environment.yml (for conda users) must list exactly pyproject's requirements."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def norm(req: str) -> str:
    return req.replace(" ", "").lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {norm(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    listed = {norm(line.strip()[2:]) for line in lines[start + 1:] if line.strip().startswith("- ")}
    listed.discard("-e.")
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "- python=3.11" in [line.strip() for line in lines]


def test_torch_is_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
