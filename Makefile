# make demo   a short GRPO training run on the embedded default (creates .venv and installs if missing)
# make test   the whole test suite (creates .venv and installs if missing); CI runs exactly this
# make bench  the CPU benchmark table (bench/cpu_iteration.py)
# make lab    JupyterLab with widgets
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench lab install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m otca_lib.train --preset tiny-sd3-pixel --iterations 30 --output-dir runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) bench/cpu_iteration.py

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab
