#!/usr/bin/env bash
# bench/gpu_check.sh: every GPU figure of the fast-step work in one run on one lent NVIDIA GPU, in under
# 5 minutes, from the repo root. It runs, in order:
#   1. the step-equivalence tests (tests/maskgan/test_step_equivalence.py; the bf16-on-GPU one runs only here);
#   2. bench.step: paper-structured step (batch 16, fp32) vs ours (train_step, bf16, batch 1024), then ours
#      at batch 2048;
#   3. bench.pipeline: a one-worker `maskgan train` from 32768 synthetic 128x128 rows, 3 epochs, streamed
#      from Ray Data every epoch (--resident-gib 0), then again with the rows kept on the GPU after epoch 1
#      (train.resident_gib auto), each next to the in-memory step;
#   4. if at least 150 s of the 5 minutes are left: ours with a compiled trunk (the warm-up pays the compile).
# Then a summary table (markdown, for docs/benchmarks.md). Everything goes to the console and to
# ${OUT:-/tmp/gpu_check}/gpu_check.log (the device tool brings $OUT back), JSON results to results.jsonl.
#
# The GPU machine has python3 with torch, numpy, pyarrow, PyYAML, Pillow, pytest, but neither Ray nor
# facenet-pytorch, and it cannot download. Both travel with the run; this script unpacks them under
# /tmp/site and puts that on PYTHONPATH (it installs nothing into the machine's Python, fetches nothing).
# Here, once, from the repo root (Python 3.12 x86-64 builds, what the GPU machine runs):
#     ../shared/tools/ray-gpu-bundle.sh        # -> .raybundle/ (Ray 2.60 + the packages Ray needs there,
#                                              #    ~39 MB; the tool adds /.raybundle/ to .git/info/exclude)
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl facenet-pytorch==2.6.0
# Then one device run: carry [".raybundle", ".whl"], timeout_s 420, command `bash bench/gpu_check.sh`.
# GPU_CHECK_SMOKE=1 runs the same phases on the CPU with tiny sizes: a check of this script itself, no figures.
# (That is the unpacking ray-gpu-bundle.sh's header gives:
#     mkdir -p /tmp/site && tar xJf .raybundle/ray.tar.xz -C /tmp/site && \
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .raybundle/*.whl && export PYTHONPATH=/tmp/site
#  plus facenet-pytorch's wheel from .whl/ into the same folder.)
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${GPU_CHECK_BUDGET_S:-300}
OUTDIR=${OUT:-/tmp/gpu_check}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
RESULTS="$OUTDIR/results.jsonl"
: > "$RESULTS"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
PY=${PYTHON:-python3}
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
  DEV=cpu; B1=8; B2=16; ROWS=64; SMALL="--steps 1 --paper-steps 1 --identities 50"; PSMALL="--batch 16 --steps 1"; BUDGET=${GPU_CHECK_BUDGET_S:-1500}
else
  DEV=cuda; B1=1024; B2=2048; ROWS=32768; SMALL=""; PSMALL=""
fi
SITE=/tmp/site
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { printf '\n== %s (t=%ss)\n' "$*" "$SECONDS"; }
left() { echo $((BUDGET - SECONDS)); }
# run LIMIT_S CMD...: a phase under its own time limit; its JSON line (if any) goes to results.jsonl
run() {
  local limit=$1; shift
  if [ "$(left)" -lt 20 ]; then echo "skipped (budget spent): $*"; return 0; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "\$ $* (limit ${limit}s)"
  timeout "$limit" "$@" | tee "$OUTDIR/.phase"
  local rc=${PIPESTATUS[0]}
  grep '^{' "$OUTDIR/.phase" >> "$RESULTS" || true
  [ "$rc" -eq 0 ] || echo "!! exit $rc: $*"
}

say "machine"
if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU here"; exit 2; }
fi
if ! $PY -c "import ray" 2>/dev/null; then
  [ -f .raybundle/ray.tar.xz ] || { echo "Ray is missing and .raybundle/ was not carried: see this script's header"; exit 2; }
  mkdir -p "$SITE" && tar xJf .raybundle/ray.tar.xz -C "$SITE" \
    && $PY -m pip install -q --no-index --no-deps --target "$SITE" .raybundle/*.whl || exit 2
fi
if ! $PY -c "import importlib.util as u; assert u.find_spec('facenet_pytorch')" 2>/dev/null; then
  ls .whl/facenet_pytorch-*.whl >/dev/null 2>&1 || { echo "facenet-pytorch is missing and .whl/ was not carried: see the header"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --target "$SITE" .whl/facenet_pytorch-*.whl || exit 2
fi
$PY -c "import torch, ray, sys; from maskgan.models.recognizer import _inception_resnet_v1 as f; f(); print('python', sys.version.split()[0], '| torch', torch.__version__, '| ray', ray.__version__, '| cuda', torch.cuda.is_available())" || exit 2
echo "setup took ${SECONDS}s"

say "1. equivalence tests (fp64/fp32 reference on CPU, bf16 on the GPU)"
run 90 $PY -m pytest -q -p no:cacheprovider tests/maskgan/test_step_equivalence.py -k "not training_with"

say "2. bench.step: paper-structured vs ours"
run 60 $PY -m bench.step --device $DEV --batch $B1 $SMALL
run 40 $PY -m bench.step --device $DEV --batch $B2 --skip-paper $SMALL

say "3. bench.pipeline: one-worker fit from shards vs the in-memory step"
WORK=$(mktemp -d /tmp/mgb.XXXX)
run 110 $PY -m bench.pipeline --device $DEV --rows $ROWS --epochs 3 --resident-gib 0 --workdir $WORK $PSMALL
if [ -f $WORK/data/manifest.json ]; then
  run 80 $PY -m bench.pipeline --device $DEV --data $WORK/data --epochs 3 --workdir $WORK $PSMALL \
    $([ "$DEV" = cpu ] && echo --resident-gib 1)
fi

say "4. ours with a compiled trunk"
if [ "$(left)" -ge 150 ]; then
  run $(($(left) - 10)) $PY -m bench.step --device $DEV --batch $B1 --compile --skip-paper --warmup 8 $SMALL
else
  echo "skipped: $(left)s left of ${BUDGET}s (a compile needs ~2 minutes)"
fi

say "summary"
$PY - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| what | command | images/s | vs | device | date |")
print("|---|---|---|---|---|---|")
for r in rows:
    if "ours" in r:  # bench.step
        o = r["ours"]
        dev = "cuda" if "CPU" not in r["device"] else "cpu"
        cmd = f"python -m bench.step --device {dev} --batch {o['batch']}" + (" --compile" if o.get("compile") else "")
        if "paper" in r:
            p = r["paper"]
            print(f"| paper-structured step (batch 16, fp32, {r['experiment']}) | {cmd} | {p['images_per_s']:.1f} | | {r['device']} | {r['date']} |")
        vs = f"{r['ratio']:.0f}x paper" if "ratio" in r else ""
        print(f"| our step (batch {o['batch']}, {o['precision']}{', compiled' if o.get('compile') else ''}, {r['experiment']}) | {cmd} | {o['images_per_s']:.0f} | {vs} | {r['device']} | {r['date']} |")
    elif "in_memory" in r:  # bench.pipeline
        dev = "cuda" if "CPU" not in r["device"] else "cpu"
        cmd = f"python -m bench.pipeline --device {dev} --resident-gib {r['resident_gib']}"
        for e in r["epochs"]:
            mode = "resident" if e.get("train/resident") else "streamed"
            share = e["train/images_per_s"] / r["in_memory"]["images_per_s"]
            print(f"| end-to-end epoch {e['epoch'] + 1} ({mode}, batch {r['batch']}, {r['experiment']}) | {cmd} | {e['train/images_per_s']:.0f} | {share:.0%} of in-memory | {r['device']} | {r['date']} |")
        print(f"| in-memory step (same settings) | {cmd} | {r['in_memory']['images_per_s']:.0f} | | {r['device']} | {r['date']} |")
EOF
echo "gpu_check done in ${SECONDS}s; log: $LOG"
