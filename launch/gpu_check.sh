#!/usr/bin/env bash
# One short lease of one GPU (the project's H200: 15 minutes, one command of at most 10):
#   1. setup: the packages the machine lacks, from wheels carried in .gpu/ (and the
#      pinned flax / optax / orbax if the machine's own fail a checkpoint round trip);
#   2. bench: launch/gpu_benchmark.sh, JAX beside PyTorch, for at most --bench-seconds;
#   3. train: the full-size real-face model, `configs/utkface.py` variant h200 (the frozen
#      networks, then the GAN) from the faces packed in .gpu/utkface, until --deadline
#      seconds after the start: SIGTERM makes the GAN checkpoint and stop; then the
#      generator and the age evaluator are exported and packed into $OUT/train.tar.gz.*
#      (parts of 15 MiB), beside the curves and the last sample sheet.
# Everything lands under $OUT (default /tmp/ipcgan_gpu_check), the log in $OUT/gpu_check.log.
#
# Prepare .gpu/ (ignored by git; the device tool's `carry` takes it) on a machine with
# TensorFlow and the built UTKFace dataset (docs/real_faces.md):
#   python -m ipcgan_jax.data.pack --config=configs/utkface.py --out=.gpu/utkface --splits=train \
#       --image_size=128 --jpeg_quality=90 --max_per_group=2200          # 41 MB
#   python -m ipcgan_jax.data.pack --config=configs/utkface.py --out=.gpu/utkface --splits=test \
#       --image_size=128 --jpeg_quality=90 --max_per_group=200           # 4 MB
#   JAX_PLATFORMS=cpu python benchmarks/count_flops.py --batch 32 128 --dtype float32 bfloat16 \
#       > .gpu/model_flops.json
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any"
#   pip download $P -d .gpu/wheels ml-collections==1.1.0 tensorboardX==2.6.5
#   pip download $P -d .gpu/pinned flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8
# Usage: [OUT=DIR] bash launch/gpu_check.sh [--bench-seconds 240] [--deadline 570]
#            [--skip-bench] [--skip-train] [--cpu-test]
# Run again on the same machine (--skip-bench), it resumes the GAN from its checkpoint in
# /tmp/ipcgan_utkface_h200 (the frozen networks are exported: not trained again) until the
# new deadline, and exports again.
# --cpu-test runs every stage on the CPU at test sizes (configs/utkface.py variant quick,
# a batch-2 benchmark against PyTorch on the CPU), to try the script before a lease.
set -uo pipefail

BENCH_SECONDS=240
DEADLINE=570
SKIP_BENCH=0
SKIP_TRAIN=0
CPU_TEST=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bench-seconds) BENCH_SECONDS="$2"; shift 2 ;;
    --deadline) DEADLINE="$2"; shift 2 ;;
    --skip-bench) SKIP_BENCH=1; shift ;;
    --skip-train) SKIP_TRAIN=1; shift ;;
    --cpu-test) CPU_TEST=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="${OUT:-/tmp/ipcgan_gpu_check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
# A second call on the same (warm) machine resumes the GAN without compiling it again.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/ipcgan_jax_cache}"
stage() { echo "=== [$(elapsed) s] $*"; }

# ---- 1. setup
stage "setup"
SITE=/tmp/ipcgan_site
# The wheels in folder $1 into $SITE, offline (the machine reaches no registry).
install_wheels() {
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$1"/*.whl
}
if compgen -G ".gpu/wheels/*.whl" > /dev/null; then
  install_wheels .gpu/wheels || exit 1
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ $CPU_TEST == 1 ]]; then export JAX_PLATFORMS=cpu; fi
versions() {
  "$PYTHON" -c "import jax, flax, optax, orbax.checkpoint as o, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())"
}
# A checkpoint round trip through the project's Orbax code (ipcgan_jax.checkpointing).
roundtrip() {
  "$PYTHON" - <<'PY'
import tempfile, numpy as np, jax.numpy as jnp
from ipcgan_jax import checkpointing
with tempfile.TemporaryDirectory() as d:
    c = checkpointing.TrainCheckpointer(d + "/ckpt", keep_last=2, keep_every=0)
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(3)}
    c.save(3, state, {"next_step": 3})
    c.wait_until_finished()
    tree, run, step = checkpointing.restore_state_tree(d + "/ckpt")
    assert step == 3 and np.allclose(np.asarray(tree["w"]), np.arange(6.0).reshape(2, 3)), (step, tree)
    c.close()
    checkpointing.save_variables(d + "/export", {"params": {"w": np.ones(3, np.float32)}}, {"network": "x"})
    variables, metadata = checkpointing.load_variables(d + "/export")
    assert metadata["network"] == "x" and np.allclose(variables["params"]["w"], 1)
print("checkpoint round trip: ok")
PY
}
versions || exit 1
if ! roundtrip; then
  echo "the machine's flax / optax / orbax failed the round trip: installing the pinned ones (.gpu/pinned)"
  install_wheels .gpu/pinned || exit 1
  versions && roundtrip || echo "round trip still failing: training will likely fail"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>/dev/null || true

# ---- 2. bench
if [[ $SKIP_BENCH == 0 ]]; then
  stage "bench (at most $BENCH_SECONDS s)"
  if [[ $CPU_TEST == 1 ]]; then
    BENCH=(--batch 2 --dtype "float32 bfloat16" --steps 1 --warmup 1)
    export GPU_BENCHMARK_DEVICE=cpu
  else
    # Most wanted rows first: a run cut short keeps them.
    BENCH=(--batch "128 32" --dtype "bfloat16 float32" --steps 20 --warmup 3)
  fi
  FLOPS="$OUT/bench/model_flops.json"
  if [[ -f .gpu/model_flops.json ]]; then FLOPS="$ROOT/.gpu/model_flops.json"; BENCH+=(--flops "$FLOPS"); fi
  timeout -k 10 "$BENCH_SECONDS" bash launch/gpu_benchmark.sh "${BENCH[@]}" --out "$OUT/bench" \
    || echo "gpu_benchmark.sh ended early (status $?)"
  pkill -f benchmarks/bench_step.py; pkill -f benchmarks/torch_reference.py  # a cut run's workers
  # A run cut short: summarise the rows its JSON holds.
  if [[ -f "$OUT/bench/bench_step_gpu.json" && ! -f "$OUT/bench/bench_step_gpu_summary.json" ]]; then
    "$PYTHON" benchmarks/gpu_summary.py "$OUT/bench/bench_step_gpu.json" --flops "$FLOPS" || true
  fi
fi

# ---- 3. train
if [[ $SKIP_TRAIN == 0 ]]; then
  WORKDIR=/tmp/ipcgan_utkface_h200
  VARIANT=h200
  [[ $CPU_TEST == 1 ]] && VARIANT=quick
  # Export, evaluator copy, packing: about 40 s on the H200; keep them inside the deadline.
  LEFT=$(( DEADLINE - $(elapsed) - 45 ))
  stage "train configs/utkface.py:$VARIANT for at most $LEFT s"
  if (( LEFT > 60 )); then
    TQDM_MININTERVAL=20 timeout -s TERM -k 60 "$LEFT" "$PYTHON" main.py \
      --config="configs/utkface.py:variant=$VARIANT,packed=$ROOT/.gpu/utkface" --workdir="$WORKDIR" \
      || echo "main.py ended with status $? (124: the deadline's SIGTERM)"
  else
    echo "no time left to train"
  fi
  stage "export"
  PACK=/tmp/ipcgan_utkface_h200_pack
  rm -rf "$PACK" && mkdir -p "$PACK"
  if compgen -G "$WORKDIR/checkpoints/[0-9]*" > /dev/null; then
    "$PYTHON" -m ipcgan_jax.export --workdir="$WORKDIR" --out="$PACK/generator" \
      --note="configs/utkface.py:h200 trained in one H200 lease (launch/gpu_check.sh)"
  fi
  [[ -d "$WORKDIR/age_evaluator/export" ]] && cp -r "$WORKDIR/age_evaluator/export" "$PACK/age_evaluator_export"
  # The curves, the run's config and the frozen networks' results (small files), and the
  # last sample sheet; not the checkpoints (D and the optimizer states) or the AlexNets.
  mkdir -p "$PACK/run"
  (cd "$WORKDIR" && find . -maxdepth 2 -type f \( -name "*.json" -o -name "*.jsonl" -o -name "*.md" \
     -o -name "*.txt" -o -name "*.csv" \) -print0 | xargs -0 -r cp --parents -t "$PACK/run")
  LAST_SHEET=$(ls "$WORKDIR/samples/"*.png 2>/dev/null | sort -V | tail -1)
  [[ -n "$LAST_SHEET" ]] && cp "$LAST_SHEET" "$PACK/run/"
  tar -C "$(dirname "$PACK")" -czf /tmp/train.tar.gz "$(basename "$PACK")"
  split -b 15M -d /tmp/train.tar.gz "$OUT/train.tar.gz."
  ls -la "$OUT"
fi
stage "done"
