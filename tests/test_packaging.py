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


def test_torch_is_a_range_for_users_and_the_cpu_build_is_pinned_by_the_install_step():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.13,<3" in deps  # a cluster's torch is kept by `pip install -e .`
    make = (ROOT / "Makefile").read_text()
    pin, package = make.index("pip install -q torch==2.13.0"), make.index("pip install -q -e")
    assert pin < package  # the CPU build is in place before the package's range is resolved


def test_the_console_scripts_are_installed_and_report_user_errors():
    import subprocess
    import sys

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"otca-train", "otca-sample", "otca-evaluate"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func)), name
    exe = Path(sys.executable).parent / "otca-evaluate"
    assert exe.exists(), f"{exe} missing: reinstall the package (make install)"
    proc = subprocess.run([str(exe), "--preset", "nope"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "error: unknown preset 'nope'" in proc.stderr


def test_importing_the_library_shows_no_torchvision_fallback_notice():
    """Notebooks and commands start without transformers' 'requires torchvision ... falling back' notices (the PIL
    fallback is what runs on a CPU install); other warnings are not hidden."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import otca_lib.train, otca_lib.rewards, otca_lib.pretrain"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "requires torchvision" not in proc.stderr
