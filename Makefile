# The two commands of the README: `make demo` runs the main job, `make test` the test suite.
# Both create the virtual environment on first use, with the exact versions of requirements.lock
# (pip takes torch from this machine's disk). `make lock` regenerates the lock from a clean
# resolve of pyproject.toml's ranges in a throwaway venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := .lock-venv
# The browser test's Chromium: Debian's package (Playwright drives it; it never downloads one).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench bench-gpu leaderboard lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scissorbench demo

$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium >/dev/null || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_scc

# Every method at 50 / 25 / 10% on random-weight models of the real 0.5B and 7B shapes, 32
# frames, bfloat16, on the GPU when there is one (on this CPU: add ARGS=--reduced).
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.bench_gpu --json results/bench_gpu.json $(ARGS)

# The static leaderboard site of the demo's runs beside the six papers' references.
leaderboard: $(STAMP)
	$(BIN)/scissorbench leaderboard results_dir=results/demo output_dir=results/site

lint: $(STAMP)
	$(BIN)/ruff check .

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# requirements.lock: every package 'pip install -e .[dev]' resolved to, from a clean"; \
	  echo "# venv ($$($(LOCK_VENV)/bin/python --version), $$(uname -m)). Regenerate: make lock."; \
	  echo "# Used as pip constraints by make test / make demo; its hash is in every record."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) results/demo .pytest_cache
