# Two commands do all set-up on a fresh machine:
#   make demo   train a small EGNN + 3-body term with Dynamic Training on the embedded example, then evaluate it
#   make test   run the test suite
# Both create/update a virtual environment in .venv. An existing torch in the system Python is reused
# (so GPU users keep their CUDA build); otherwise torch==2.13.0 is installed from pip's configured index,
# or from TORCH_INDEX when given (e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build).
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "Reusing the system torch ($$($(PYTHON) -c 'import torch; print(torch.__version__)'))"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
		$(PY) -m pip install -q --upgrade pip; \
		$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	@# the torch found or installed above stays: pip would otherwise swap it to satisfy an extra's pins
	@# (schnetpack 2.1's sympy<=1.12 conflicts with torch >= 2.5; with torch fixed pip takes schnetpack 2.0.4)
	$(PY) -m pip install -q -e ".[dev]" "torch==$$($(PY) -c 'import torch; print(torch.__version__)')"
	@rm -f $(VENV)/.installed-*; touch $@

demo: venv
	$(VENV)/bin/longmd demo --out runs/demo

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

bench: venv
	$(PY) benchmarks/speed.py --out runs/bench

clean:
	rm -rf $(VENV) runs .pytest_cache
