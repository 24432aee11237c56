#!/usr/bin/env bash
# The training-step benchmark on one GPU, JAX beside PyTorch: benchmarks/bench_step.py runs
# the faithful step in JAX (XLA's conv, cuDNN) and benchmarks/torch_reference.py
# --device cuda (cuDNN autotuning, TF32 for float32) alternately, in fresh processes, for
# every (batch, dtype): JAX, then each PyTorch variant (NCHW, channels-last; with --compile
# also torch.compile), --rounds times. Prints per row the milliseconds, images/s, model
# FLOP utilisation and the JAX / PyTorch-best ratio.
#
# Needs JAX with CUDA, and torch with CUDA in $TORCH_PYTHON (default: the same python):
#   pip install -U "jax[cuda12]"      # plus this repo's requirements (flax, optax, ml_collections, ...)
# Usage (from the repository root):
#   [TORCH_PYTHON=python-with-torch] bash launch/gpu_benchmark.sh
#        [--batch "32 128"] [--dtype "float32 bfloat16"] [--rounds 1] [--steps 20] [--warmup 3]
#        [--torch-variants "nchw channels-last"] [--flops FILE]
#        [--peak-bf16-tflops 990] [--peak-fp32-tflops 495] [--out DIR]
# --flops: model FLOPs per step (benchmarks/count_flops.py's JSON); without it they are
# counted here on the CPU lowering (GPU cost analysis leaves out cuDNN convolutions).
# Peaks default to the H100/H200 SXM dense rates: bf16 ~990 TFLOP/s; for float32 TF32
# ~495, since XLA runs float32 convs and matmuls at its default precision, TF32 on Hopper
# (pass --peak-fp32-tflops 67 to compare with strict FP32).
set -euo pipefail

BATCHES="32 128"
DTYPES="float32 bfloat16"
ROUNDS=1
STEPS=20
WARMUP=3
TORCH_VARIANTS="nchw channels-last"
FLOPS=""
PEAK_BF16=990
PEAK_FP32=495
OUT="${OUT:-${TMPDIR:-/tmp}/ipcgan_gpu_benchmark}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --batch) BATCHES="$2"; shift 2 ;;
    --dtype) DTYPES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --torch-variants) TORCH_VARIANTS="$2"; shift 2 ;;
    --flops) FLOPS="$2"; shift 2 ;;
    --peak-bf16-tflops) PEAK_BF16="$2"; shift 2 ;;
    --peak-fp32-tflops) PEAK_FP32="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python}"
TORCH_PYTHON="${TORCH_PYTHON:-$(command -v "$PYTHON")}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
# GPU_BENCHMARK_DEVICE=cpu: both frameworks on the CPU, to try this script without a GPU.
DEVICE="${GPU_BENCHMARK_DEVICE:-cuda}"
"$PYTHON" -c "import jax, sys; d = jax.devices()[0]; d.platform == 'gpu' or sys.argv[1] == 'cpu' or sys.exit(f'error: no GPU visible to JAX ({d}); GPU_BENCHMARK_DEVICE=cpu tries the script on the CPU'); print('device:', d.device_kind, 'jax', jax.__version__)" "$DEVICE" || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv || true

if [[ -z "$FLOPS" ]]; then
  FLOPS="$OUT/model_flops.json"
  # shellcheck disable=SC2086
  JAX_PLATFORMS=cpu "$PYTHON" benchmarks/count_flops.py --batch $BATCHES --dtype $DTYPES > "$FLOPS"
fi

TORCH_ARGS=(--no-torch)
if "$TORCH_PYTHON" -c "import torch, sys; sys.exit(0 if sys.argv[1] == 'cpu' or torch.cuda.is_available() else 1)" "$DEVICE" 2>/dev/null; then
  # shellcheck disable=SC2206
  TORCH_ARGS=(--torch-python "$TORCH_PYTHON" --torch-device "$DEVICE" --torch-variants $TORCH_VARIANTS)
else
  echo "no torch with $DEVICE in $TORCH_PYTHON: JAX rows only" >&2
fi
# shellcheck disable=SC2086
"$PYTHON" benchmarks/bench_step.py --batch $BATCHES --dtype $DTYPES --rounds "$ROUNDS" \
  --steps "$STEPS" --warmup "$WARMUP" "${TORCH_ARGS[@]}" --json "$OUT/bench_step_gpu.json" > /dev/null \
  || echo "bench_step.py stopped early; summarising the rows it finished" >&2

"$PYTHON" benchmarks/gpu_summary.py "$OUT/bench_step_gpu.json" --flops "$FLOPS" \
  --peak-fp32-tflops "$PEAK_FP32" --peak-bf16-tflops "$PEAK_BF16"
echo "full report: $OUT/bench_step_gpu.json" >&2
