"""benchmarks/gpu_summary.py (launch/gpu_benchmark.sh's table): per (batch, dtype) the
JAX and PyTorch-best times, images/s, utilisation of the peak on the model's FLOP count,
and the ratio; rows a cut-short run did not finish say so."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_rows_ratios_and_utilisation(tmp_path):
    report = {"settings": {"rounds": 1}, "results": [
        {"batch": 32, "dtype": "float32", "jax": {"config": {"median_ms": 20.0}},
         "torch": {"median_ms": 25.0, "variant": "channels-last"},
         "torch_variants": {"nchw": {"median_ms": 30.0}, "channels-last": {"median_ms": 25.0}}},
        {"batch": 128, "dtype": "bfloat16", "jax": {"config": {"error": "out of memory"}}}]}
    flops = [{"batch": 32, "dtype": "float32", "gflop_per_step": 1900.0},
             {"batch": 128, "dtype": "bfloat16", "gflop_per_step": 7600.0}]
    report_path, flops_path = tmp_path / "bench_step_gpu.json", tmp_path / "flops.json"
    report_path.write_text(json.dumps(report))
    flops_path.write_text(json.dumps(flops))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_summary.py"), str(report_path),
                             "--flops", str(flops_path), "--peak-fp32-tflops", "400"],
                            capture_output=True, text=True, timeout=60, check=True)
    summary = json.loads((tmp_path / "bench_step_gpu_summary.json").read_text())
    first, second = summary["rows"]
    # 1,900 GFLOP in 20 ms: 95 TFLOP/s, 23.75% of 400; PyTorch 76 TFLOP/s, 19%.
    assert (first["jax_tflops"], first["jax_mfu"], first["jax_images_per_s"]) == (95.0, 0.2375, 1600.0)
    assert (first["torch_tflops"], first["torch_mfu"], first["torch_images_per_s"]) == (76.0, 0.19, 1280.0)
    assert first["jax_over_torch_best"] == 0.8 and first["torch_variant"] == "channels-last"
    assert first["torch_variants_ms"] == {"nchw": 30.0, "channels-last": 25.0}
    assert second["jax_error"] == "out of memory" and second["torch_error"] == "not run"
    assert "jax_over_torch_best" not in second
    assert "| 32 | float32 (peak 400) | 20.0 ms | 1,600 | 24% | 25.0 ms (channels-last) | 1,280 | 19% | 0.80 |" \
        in result.stdout
