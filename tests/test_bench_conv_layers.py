"""benchmarks/bench_conv_layers.py: its report times the per-group paths
(models.layers.conv_per_group, tested in test_layers_speed_equivalence.py) on the grouped
layers only and weights every layer by its calls per step, the per-group impls taking the
plain impl's time on ungrouped layers."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_has_per_group_rows_for_grouped_layers_and_weighted_totals(tmp_path):
    report_path = tmp_path / "conv.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_conv_layers.py"), "--batch", "1",
                    "--rounds", "1", "--repeats", "1", "--layers", "alex_conv5", "d_dis_2",
                    "--impls", "xla", "xla_per_group", "im2col_per_group", "--json", str(report_path)],
                   check=True, env=env, capture_output=True, timeout=600)
    report = json.loads(report_path.read_text())
    rows = {row["layer"]: row for row in report["layers"]}
    assert rows["alex_conv5"]["shape"]["groups"] == 2 and rows["d_dis_2"]["shape"]["groups"] == 1
    assert rows["alex_conv5"]["im2col_per_group_ms"] > 0 and rows["alex_conv5"]["xla_ms"] > 0
    assert "im2col_per_group_ms" not in rows["d_dis_2"]  # ungrouped: the same conv as im2col
    assert not any(key.endswith("_over_torch") for row in rows.values() for key in row)  # no PyTorch run
    calls = {name: row["calls_per_step"] for name, row in rows.items()}
    assert calls == {"alex_conv5": 2, "d_dis_2": 4}
    totals = report["totals"]
    assert abs(totals["xla_ms_per_step"] - (2 * rows["alex_conv5"]["xla_ms"] + 4 * rows["d_dis_2"]["xla_ms"])) < 0.2
    assert abs(totals["xla_per_group_ms_per_step"]
               - (2 * rows["alex_conv5"]["xla_per_group_ms"] + 4 * rows["d_dis_2"]["xla_ms"])) < 0.2
    assert totals["im2col_per_group_ms_per_step"] is None  # no plain im2col run for d_dis_2
