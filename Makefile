# make demo   GRPO and OTCA on the shipped ShapesWorld image model, about 5 minutes side by side (creates .venv if missing)
# make smoke  a 30-iteration GRPO run on a tiny random SD3 pipeline (seconds per iteration)
# make test   the whole test suite (creates .venv and installs if missing); CI runs exactly this
# make bench  the CPU benchmark table (bench/cpu_iteration.py)
# make lab    JupyterLab with widgets
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo smoke test bench lab install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# OMP_WAIT_POLICY=PASSIVE: on a shared CPU, OpenMP workers that busy-wait made an iteration several times slower
demo: $(VENV)/.installed
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) -m otca_lib.demo --out runs/demo

smoke: $(VENV)/.installed
	$(PY) -m otca_lib.train --preset tiny-sd3-pixel --iterations 30 --output-dir runs/smoke

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) bench/cpu_iteration.py

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab
