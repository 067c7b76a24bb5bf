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

.PHONY: demo test bench lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scissorbench demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_scc

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
