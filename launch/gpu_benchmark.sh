#!/usr/bin/env bash
# The training-step benchmark (benchmarks/bench_step.py) on one GPU: images/s and model FLOP
# utilisation (model FLOPs per step from XLA's cost analysis of the CPU lowering,
# benchmarks/count_flops.py, / step time / the GPU's peak); then, where torch sees the GPU,
# benchmarks/torch_reference.py --device cuda in its variants (float32 with TF32, bfloat16
# autocast, each NCHW and channels-last; with TORCH_COMPILE=1 also torch.compile), and for
# each (batch, dtype) PyTorch's best and the JAX / PyTorch ratio.
#
# Needs JAX with CUDA on the GPU machine:
#   pip install -U "jax[cuda12]"      # plus this repo's requirements (flax, optax, ml_collections, ...)
# Usage (from the repository root):
#   [TORCH_PYTHON=python-with-torch] [TORCH_COMPILE=1] bash launch/gpu_benchmark.sh
#        [--batch "8 32 128"] [--steps 20] [--warmup 3]
#        [--peak-bf16-tflops 990] [--peak-fp32-tflops 67] [--out DIR]
# Defaults are H100/H200 SXM dense peaks: bf16 ~990 TFLOP/s; for float32, TF32 ~495 TFLOP/s,
# since XLA runs float32 convs and matmuls at its default precision, TF32 on Hopper (pass
# --peak-fp32-tflops 67 to compare with strict FP32).
set -euo pipefail

BATCHES="8 32 128"
STEPS=20
WARMUP=3
PEAK_BF16=990
PEAK_FP32=495
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

# Model FLOPs from the CPU lowering: GPU cost analysis leaves out cuDNN convolutions.
# shellcheck disable=SC2086
JAX_PLATFORMS=cpu "$PYTHON" benchmarks/count_flops.py --batch $BATCHES --dtype float32 bfloat16 \
  > "$OUT/model_flops.json"

TORCH_PYTHON="${TORCH_PYTHON:-$PYTHON}"
: > "$OUT/torch_gpu.jsonl"
if "$TORCH_PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  VARIANTS=("" "--channels-last" "--bf16" "--bf16 --channels-last")
  if [[ "${TORCH_COMPILE:-0}" == 1 ]]; then VARIANTS+=("--compile" "--bf16 --compile"); fi
  for B in $BATCHES; do
    for V in "${VARIANTS[@]}"; do
      # shellcheck disable=SC2086
      "$TORCH_PYTHON" benchmarks/torch_reference.py --device cuda --batch "$B" --steps "$STEPS" \
        --warmup "$WARMUP" $V | grep '^{' >> "$OUT/torch_gpu.jsonl" \
        || echo "torch_reference.py --batch $B $V failed" >&2
    done
  done
else
  echo "no CUDA device visible to torch ($TORCH_PYTHON): JAX rows only" >&2
fi

"$PYTHON" - "$OUT/bench_step_gpu.json" "$PEAK_FP32" "$PEAK_BF16" "$OUT/model_flops.json" "$OUT/torch_gpu.jsonl" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
torch_runs = [json.loads(line) for line in open(sys.argv[5]) if line.strip()]
torch_dtype = {"fp32": "float32", "bf16": "bfloat16"}
peaks = {"float32": float(sys.argv[2]), "bfloat16": float(sys.argv[3])}
model_gflop = {(r["batch"], r["dtype"]): r["gflop_per_step"] for r in json.load(open(sys.argv[4]))}
rows = []
for row in report["results"]:
    jax_row = row["jax"]["config"]  # the config's conv_impl ('auto': XLA's conv on a GPU)
    if "median_ms" not in jax_row:
        rows.append(dict(batch=row["batch"], dtype=row["dtype"], error=jax_row.get("error")))
        continue
    gflop = model_gflop[(row["batch"], row["dtype"])]
    tflops = gflop / (jax_row["median_ms"] / 1e3) / 1e3
    rows.append(dict(batch=row["batch"], dtype=row["dtype"], median_ms=jax_row["median_ms"],
                     images_per_s=jax_row["images_per_s"],
                     model_gflop_per_step=gflop,
                     gpu_cost_analysis_gflop_per_step=jax_row["cost_analysis_gflop_per_step"],
                     achieved_tflops=round(tflops, 2), peak_tflops=peaks[row["dtype"]],
                     mfu=round(tflops / peaks[row["dtype"]], 4),
                     compile_cold_s=jax_row.get("compile_cold_s"),
                     compile_cached_s=jax_row.get("compile_cached_s")))
    same = [t for t in torch_runs if t.get("batch") == row["batch"] and "error" not in t
            and torch_dtype.get(t.get("dtype")) == row["dtype"]]
    if same:
        best = min(same, key=lambda t: t["median_ms"])
        rows[-1].update(torch_best_ms=best["median_ms"], torch_best_images_per_s=best["images_per_s"],
                        torch_best_variant=dict(memory_format=best["memory_format"], compiled=best["compiled"],
                                                tf32=best["tf32"]),
                        torch_variants_ms={f"{t['memory_format']}{'+compile' if t['compiled'] else ''}":
                                           t["median_ms"] for t in same},
                        jax_over_torch_best=round(jax_row["median_ms"] / best["median_ms"], 3))
summary = {"benchmark": "ipcgan train step (faithful, D+G update)", "rows": rows}
print(json.dumps(summary, indent=1))
json.dump(summary, open(sys.argv[1].replace(".json", "_mfu.json"), "w"), indent=1)
PY
echo "full report: $OUT/bench_step_gpu.json" >&2
