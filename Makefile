# Two entry points for a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU torch wheel first: an unpinned resolve would pull several GB of CUDA
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# Ray's job client sends the token (~/.ray/auth_token) only when RAY_AUTH_MODE=token is set,
	# the one thing it cannot find by itself: the activated venv sets it, so a fresh shell's
	# `ray job submit -- ...` reaches the token-auth local cluster with no flags or sourcing.
	grep -q 'RAY_AUTH_MODE' $(BIN)/activate || \
		printf '\n# fm4npp (Makefile): Ray clients use token auth\nexport RAY_AUTH_MODE=token\n' >> $(BIN)/activate
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the fast tier: every module's unit behaviour, no Ray clusters or training runs (~1.5 min)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh $(DEMO)

clean:
	rm -rf $(VENV) $(DEMO)
