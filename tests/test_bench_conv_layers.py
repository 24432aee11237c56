"""benchmarks/bench_conv_layers.py: its per-group conv computes the grouped conv (values and
both gradients), and its report times the per-group paths on the grouped layers only and
weights every layer by its calls per step, the per-group impls taking the plain impl's time
on ungrouped layers."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax.models.layers import conv_im2col
from tests.helpers import benchmark_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("inner", [jax.lax.conv_general_dilated, conv_im2col], ids=["xla", "im2col"])
@pytest.mark.parametrize("groups,padding", [(2, "SAME"), (3, "VALID"), (2, ((1, 0), (2, 1)))])
def test_per_group_conv_equals_the_grouped_conv_in_values_and_gradients(inner, groups, padding):
    rng = np.random.default_rng(groups)
    x = jnp.asarray(rng.normal(size=(2, 7, 8, 2 * groups)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 4 * groups)), jnp.float32)
    out_shape = jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, feature_group_count=groups,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC")).shape
    cotangent = jnp.asarray(rng.normal(size=out_shape), jnp.float32)

    def loss(conv):
        return lambda x, k: jnp.sum(cotangent * conv(x, k, (1, 1), padding, feature_group_count=groups,
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))

    per_group, grouped = loss(benchmark_module("bench_conv_layers").conv_per_group(inner)), loss(jax.lax.conv_general_dilated)
    assert abs(float(per_group(x, kernel)) - float(grouped(x, kernel))) < 1e-4 * abs(float(grouped(x, kernel)))
    for actual, expected in zip(jax.grad(per_group, (0, 1))(x, kernel), jax.grad(grouped, (0, 1))(x, kernel)):
        assert float(jnp.max(jnp.abs(actual - expected))) < 1e-5 * float(jnp.max(jnp.abs(expected)))


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
