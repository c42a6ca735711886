# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU torch by default; GPU users install their CUDA torch into .venv first (see README) and keep it.
TORCH  ?= torch==2.13.0

.PHONY: venv demo test test-faults bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	# facenet-pytorch's metadata pins torch<2.3, numpy<2, Pillow<10.3; its model code runs on current ones.
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/maskgan demo

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-faults: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults

clean:
	rm -rf demo_out .pytest_cache
