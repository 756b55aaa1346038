# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install avfusion into it when needed.
#
# TORCH_SPEC picks the PyTorch build. The default is the CPU wheel this project is developed
# on; it is installed in the same pip command as avfusion so that pip never swaps it for a
# multi-GB CUDA build. GPU users: `make install TORCH_SPEC='torch==2.5.1'` (or any build >= 2.4).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.avfusion-installed

.PHONY: install demo test test-all clean

# --no-compile: pip would byte-compile every installed module (torch's thousands: ~25 s of a
# ~70 s install on 2 cores); Python compiles the ones it imports on first use instead.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile --disable-pip-version-check "$(TORCH_SPEC)" -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/avfusion demo

# test: the default tier (every module, minutes); test-all adds the slow tier (pytest -m slow:
# the demo's result, SIGKILL fault injections, DDP, exports, full-size models). CI runs test-all.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache runs/demo
