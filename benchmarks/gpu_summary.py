"""Summarises a GPU run of bench_step.py (launch/gpu_benchmark.sh): per (batch, dtype) the
JAX and PyTorch-best milliseconds, images/s, model TFLOP/s and utilisation of the peak,
and the JAX / PyTorch-best ratio; prints JSON, then the README's table rows.

  python benchmarks/gpu_summary.py BENCH_STEP_JSON --flops MODEL_FLOPS_JSON
      [--peak-fp32-tflops 495] [--peak-bf16-tflops 990]

MODEL_FLOPS_JSON is benchmarks/count_flops.py's output: the model's FLOPs per step from
the CPU lowering (a GPU's cost analysis leaves out cuDNN's convolutions). The same count
applies to both frameworks (same networks and step). Writes BENCH_STEP_JSON's name with
'_summary' before '.json' too.
"""
from __future__ import annotations

import argparse
import json
import sys


def summarise(report: dict, model_gflop: dict[tuple[int, str], float], peaks: dict[str, float]) -> list[dict]:
    rows = []
    for result in report["results"]:
        batch, dtype = result["batch"], result["dtype"]
        row = {"batch": batch, "dtype": dtype}
        gflop = model_gflop.get((batch, dtype))
        row["model_gflop_per_step"] = gflop
        sides = {"jax": result["jax"].get("config") or next(iter(result["jax"].values()), {}),
                 "torch": result.get("torch", {})}
        for side, summary in sides.items():
            if "median_ms" not in summary:
                row[f"{side}_error"] = summary.get("error", "not run")
                continue
            row[f"{side}_ms"] = summary["median_ms"]
            row[f"{side}_images_per_s"] = round(batch / (summary["median_ms"] / 1e3), 1)
            if gflop:
                tflops = gflop / (summary["median_ms"] / 1e3) / 1e3
                row[f"{side}_tflops"] = round(tflops, 1)
                row[f"{side}_mfu"] = round(tflops / peaks[dtype], 4)
        if "torch_ms" in row:
            row["torch_variant"] = sides["torch"].get("variant", "nchw")
            row["torch_variants_ms"] = {variant: summary.get("median_ms")
                                        for variant, summary in result.get("torch_variants", {}).items()}
        if "jax_ms" in row and "torch_ms" in row:
            row["jax_over_torch_best"] = round(row["jax_ms"] / row["torch_ms"], 3)
        rows.append(row)
    return rows


def table(rows: list[dict], peaks: dict[str, float]) -> str:
    lines = ["| batch | dtype | JAX step | JAX images/s | JAX MFU | PyTorch best (variant) | PyTorch images/s "
             "| PyTorch MFU | JAX / PyTorch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        jax_cells = (f"{r['jax_ms']:.1f} ms | {r['jax_images_per_s']:,.0f} | {r.get('jax_mfu', 0):.0%}"
                     if "jax_ms" in r else f"{r.get('jax_error')} | | ")
        torch_cells = (f"{r['torch_ms']:.1f} ms ({r['torch_variant']}) | {r['torch_images_per_s']:,.0f} | "
                       f"{r.get('torch_mfu', 0):.0%}" if "torch_ms" in r else f"{r.get('torch_error')} | | ")
        ratio = f"{r['jax_over_torch_best']:.2f}" if "jax_over_torch_best" in r else "-"
        dtype = f"{r['dtype']} (peak {peaks[r['dtype']]:.0f})"
        lines.append(f"| {r['batch']} | {dtype} | {jax_cells} | {torch_cells} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report")
    parser.add_argument("--flops", required=True)
    parser.add_argument("--peak-fp32-tflops", type=float, default=495.0)
    parser.add_argument("--peak-bf16-tflops", type=float, default=990.0)
    args = parser.parse_args(argv)
    with open(args.report) as file:
        report = json.load(file)
    with open(args.flops) as file:
        model_gflop = {(r["batch"], r["dtype"]): r["gflop_per_step"] for r in json.load(file)}
    peaks = {"float32": args.peak_fp32_tflops, "bfloat16": args.peak_bf16_tflops}
    rows = summarise(report, model_gflop, peaks)
    summary = {"benchmark": "ipcgan train step (faithful, D+G update), JAX vs PyTorch on one GPU",
               "settings": report.get("settings"), "peak_tflops": peaks, "rows": rows}
    print(json.dumps(summary, indent=1))
    print(table(rows, peaks))
    with open(args.report.replace(".json", "_summary.json"), "w") as file:
        json.dump(summary, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
