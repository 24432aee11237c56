"""Every convolution of the faithful training step, one by one, in JAX and PyTorch; prints JSON.

A per-layer profile of the step's main cost: for each conv of G, D and the frozen AlexNet at
the faithful sizes (batch `--batch`, 128 px faces, 227 px AlexNet input), the time of one
forward + backward (gradients of the input and the kernel of a sum-of-squares loss; of the
input only for the frozen AlexNet), as
JAX's `lax.conv_general_dilated` (XLA's own conv path, `--impls xla`), as JAX im2col + dot
(`ipcgan_jax.models.layers.conv_im2col`, `--impls im2col`) and as PyTorch's
`conv2d` (oneDNN), each in its own subprocess, alternating (A B C A B C ...) for `--rounds`.
`--impls xla_per_group im2col_per_group` add, for the grouped layers only, each path with
the groups run as separate ungrouped convs, concatenated (`models.layers.conv_per_group`;
the demo's trunk trains this way, `conv_impl='xla_per_group'`: benchmarks/README.md,
"Grouped convs one group at a time").
Reports median ms, GFLOP/s (3x the forward FLOPs: forward, data and weight gradients; 2x
for the frozen layers) and
the ratios to PyTorch. `calls_per_step` says how often the step runs each layer
(forward + backward), so the per-step weight of each row is visible; `totals` sums time x
calls per impl (a per-group impl takes its plain impl's time on the ungrouped layers, and
is null where that impl was not run).

Usage:
  python benchmarks/bench_conv_layers.py [--batch 8] [--rounds 2] [--repeats 5]
      [--layers dis_3 dis_4] [--impls xla im2col xla_per_group im2col_per_group torch]
      [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from json_report import print_report, run_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TORCH_PYTHON = "/tmp/torch_venv/bin/python"

# name: (height/width of the input, in, out, kernel, stride, padding, groups, calls per step)
# Faithful networks (G 32 features, D 64/512, AlexNet); calls per step count forward +
# backward passes: D runs 3 times in the D update and once in the G update; the frozen
# AlexNet runs forward on the sources and forward + backward on the generated faces, where
# only the input's gradient is needed (`FROZEN`: timed as forward + input gradient).
LAYERS = {
    "g_conv1": (128, 8, 32, 7, 1, "SAME", 1, 1),
    "g_conv2": (128, 32, 64, 3, 2, "SAME", 1, 1),
    "g_conv3": (64, 64, 128, 3, 2, "SAME", 1, 1),
    "g_residual": (32, 128, 128, 3, 1, "SAME", 1, 12),
    "g_deconv1_subpixel": (33, 128, 256, 2, 1, "VALID", 1, 1),
    "g_deconv2_subpixel": (65, 64, 128, 2, 1, "VALID", 1, 1),
    "g_conv4": (128, 32, 3, 7, 1, "SAME", 1, 1),
    "d_dis": (128, 3, 64, 4, 2, "SAME", 1, 4),
    "d_dis_1": (64, 69, 128, 4, 2, "SAME", 1, 4),
    "d_dis_2": (32, 128, 256, 4, 2, "SAME", 1, 4),
    "d_dis_3": (16, 256, 512, 4, 1, "SAME", 1, 4),
    "d_dis_4": (16, 512, 512, 4, 1, "SAME", 1, 4),
    "alex_conv1": (227, 3, 96, 11, 4, "VALID", 1, 2),
    "alex_conv2": (27, 96, 256, 5, 1, "SAME", 2, 2),
    "alex_conv3": (13, 256, 384, 3, 1, "SAME", 1, 2),
    "alex_conv4": (13, 384, 384, 3, 1, "SAME", 2, 2),
    "alex_conv5": (13, 384, 256, 3, 1, "SAME", 2, 2),
}
FROZEN = {"alex_conv1", "alex_conv2", "alex_conv3", "alex_conv4", "alex_conv5"}
PER_GROUP = "_per_group"
JAX_IMPLS = ("xla", "im2col", "xla" + PER_GROUP, "im2col" + PER_GROUP)


def out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    return -(-size // stride) if padding == "SAME" else (size - kernel) // stride + 1


def forward_gflop(batch: int, layer: tuple) -> float:
    size, cin, cout, k, s, pad, groups, _ = layer
    o = out_size(size, k, s, pad)
    return 2 * batch * o * o * k * k * (cin // groups) * cout / 1e9


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((out_size(size, kernel, stride, "SAME") - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _time(fn, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_jax_worker(impl: str, batch: int, names: list[str], repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, ROOT)
    from ipcgan_jax.models.layers import conv_im2col, conv_per_group

    plain = {"xla": jax.lax.conv_general_dilated, "im2col": conv_im2col}[impl.removesuffix(PER_GROUP)]
    conv = conv_per_group(plain) if impl.endswith(PER_GROUP) else plain
    out = {}
    for name in names:
        size, cin, cout, k, s, pad, groups, _ = LAYERS[name]
        if impl.endswith(PER_GROUP) and groups == 1:
            continue  # the same conv as without the suffix
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((batch, size, size, cin), np.float32))
        w = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout), np.float32) * 0.05)

        def loss(x, w):
            y = conv(x, w, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                     feature_group_count=groups)
            return jnp.sum(y * y)

        step = jax.jit(jax.grad(loss, argnums=0 if name in FROZEN else (0, 1)))
        out[name] = [round(t * 1e3, 2) for t in _time(lambda: jax.block_until_ready(step(x, w)), repeats)]
    return out


def run_torch_worker(batch: int, names: list[str], repeats: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    out = {}
    for name in names:
        size, cin, cout, k, s, pad, groups, _ = LAYERS[name]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, cin, size, size, generator=gen).requires_grad_()
        w = (torch.randn(cout, cin // groups, k, k, generator=gen) * 0.05).requires_grad_(name not in FROZEN)
        pads = (0, 0, 0, 0) if pad == "VALID" else same_pads(size, k, s) * 2  # (l, r, t, b)

        def step():
            x.grad = w.grad = None
            y = F.conv2d(F.pad(x, pads) if any(pads) else x, w, stride=s, groups=groups)
            (y * y).sum().backward()

        out[name] = [round(t * 1e3, 2) for t in _time(step, repeats)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per layer and run")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--impls", nargs="+", default=["xla", "im2col", "torch"],
                        choices=[*JAX_IMPLS, "torch"])
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "torch":
        print(json.dumps(run_torch_worker(args.batch, args.layers, args.repeats, args.torch_threads)))
        return 0
    if args.worker:
        print(json.dumps(run_jax_worker(args.worker, args.batch, args.layers, args.repeats)))
        return 0

    impls = [i for i in args.impls if i != "torch" or os.path.exists(args.torch_python)]
    runs = {impl: [] for impl in impls}
    for round_index in range(args.rounds):
        for impl in impls:
            print(f"[bench_conv_layers] round {round_index + 1}/{args.rounds}: {impl}", file=sys.stderr, flush=True)
            python = args.torch_python if impl == "torch" else sys.executable
            command = [python, os.path.abspath(__file__), "--worker", impl, "--batch", str(args.batch),
                       "--repeats", str(args.repeats), "--torch-threads", str(args.torch_threads),
                       "--layers", *args.layers]
            run = run_json(command)
            if "error" in run:
                print(run["stderr_tail"], file=sys.stderr)
                return 1
            runs[impl].append(run)
    rows = []
    for name in args.layers:
        gflop = forward_gflop(args.batch, LAYERS[name])
        row = {"layer": name, "shape": dict(zip(("size", "in", "out", "kernel", "stride", "padding", "groups"),
                                                LAYERS[name][:7])),
               "calls_per_step": LAYERS[name][7], "forward_gflop": round(gflop, 3)}
        for impl in impls:
            if name not in runs[impl][0]:
                continue  # a per-group impl on an ungrouped layer
            median = statistics.median(t for run in runs[impl] for t in run[name])
            row[f"{impl}_ms"] = median
            passes = 2 if name in FROZEN else 3
            row[f"{impl}_gflops"] = round(passes * gflop / (median / 1e3), 1)
        for impl in impls:
            if impl != "torch" and f"{impl}_ms" in row and "torch_ms" in row:
                row[f"{impl}_over_torch"] = round(row[f"{impl}_ms"] / row["torch_ms"], 3)
        rows.append(row)
    # per step: every layer times its calls; a per-group impl takes its plain impl's time on
    # the ungrouped layers (None where that impl was not run)
    totals = {}
    for impl in impls:
        times = [r.get(f"{impl}_ms", r.get(f"{impl.removesuffix(PER_GROUP)}_ms")) for r in rows]
        totals[f"{impl}_ms_per_step"] = (None if None in times else
                                         round(sum(t * r["calls_per_step"] for t, r in zip(times, rows)), 1))
    report = {"batch": args.batch, "rounds": args.rounds, "repeats": args.repeats,
              "load_avg": [round(x, 2) for x in os.getloadavg()], "layers": rows, "totals": totals}
    print_report(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
