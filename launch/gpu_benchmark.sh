#!/usr/bin/env bash
# The training-step benchmark (benchmarks/bench_step.py, JAX only) on one GPU: images/s and
# model FLOP utilisation (XLA cost-analysis FLOPs per step / step time / the GPU's peak).
#
# Needs JAX with CUDA on the GPU machine:
#   pip install -U "jax[cuda12]"      # plus this repo's requirements (flax, optax, ml_collections, ...)
# Usage (from the repository root):
#   bash launch/gpu_benchmark.sh [--batch "8 32 128"] [--steps 20] [--warmup 3]
#        [--peak-bf16-tflops 990] [--peak-fp32-tflops 67] [--out DIR]
# Defaults are H100/H200 SXM dense peaks: bf16 ~990 TFLOP/s, fp32 (no TF32) ~67 TFLOP/s.
# XLA runs float32 convs and matmuls on GPU at its default precision (TF32 on Hopper), so
# the float32 row's utilisation against 67 can exceed 1; it is reported as measured.
set -euo pipefail

BATCHES="8 32 128"
STEPS=20
WARMUP=3
PEAK_BF16=990
PEAK_FP32=67
OUT="${OUT:-${TMPDIR:-/tmp}/ipcgan_gpu_benchmark}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --batch) BATCHES="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --peak-bf16-tflops) PEAK_BF16="$2"; shift 2 ;;
    --peak-fp32-tflops) PEAK_FP32="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
"$PYTHON" -c "import jax; d = jax.devices()[0]; assert d.platform == 'gpu', f'no GPU visible to JAX: {d}'; print('device:', d.device_kind)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

# shellcheck disable=SC2086
"$PYTHON" benchmarks/bench_step.py --no-torch --batch $BATCHES --dtype float32 bfloat16 \
  --rounds 2 --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/bench_step_gpu.json" > /dev/null

"$PYTHON" - "$OUT/bench_step_gpu.json" "$PEAK_FP32" "$PEAK_BF16" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
peaks = {"float32": float(sys.argv[2]), "bfloat16": float(sys.argv[3])}
rows = []
for row in report["results"]:
    jax_row = row["jax"]
    if "median_ms" not in jax_row:
        rows.append(dict(batch=row["batch"], dtype=row["dtype"], error=jax_row.get("error")))
        continue
    tflops = jax_row["cost_analysis_gflop_per_step"] / (jax_row["median_ms"] / 1e3) / 1e3
    rows.append(dict(batch=row["batch"], dtype=row["dtype"], median_ms=jax_row["median_ms"],
                     images_per_s=jax_row["images_per_s"],
                     gflop_per_step=jax_row["cost_analysis_gflop_per_step"],
                     achieved_tflops=round(tflops, 2), peak_tflops=peaks[row["dtype"]],
                     mfu=round(tflops / peaks[row["dtype"]], 4),
                     compile_cold_s=jax_row.get("compile_cold_s"),
                     compile_cached_s=jax_row.get("compile_cached_s")))
summary = {"benchmark": "ipcgan train step (faithful, D+G update)", "rows": rows}
print(json.dumps(summary, indent=1))
json.dump(summary, open(sys.argv[1].replace(".json", "_mfu.json"), "w"), indent=1)
PY
echo "full report: $OUT/bench_step_gpu.json" >&2
