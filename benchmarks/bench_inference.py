"""Inference latency of the faithful generator (test mode) per face, all five age groups; JSON.

"Per face" = one 128x128 face rendered at every one of the 5 target groups.
  batch1: one compiled call per (face, group) with batch 1, called 5 times per face.
  batched: `--faces` faces x 5 groups in one compiled call. The call maps G over
    (face, group) pairs with `jax.vmap`, each a batch of 1, because the residual-block
    BNs use the statistics of their batch even in test mode (docs/faithfulness.md §4):
    stacking faces into one ordinary batch would change every face's result. The output
    equals batch1's (checked here, `max_abs_diff_vs_batch1`).
Random G parameters with moving statistics from a few training-mode batches.
PyTorch side: benchmarks/torch_reference.py --inference (the same generator, test mode, five
batch-1 calls per face) in the torch venv (`--torch-python`), run after each JAX round
(`--rounds`, alternating); `jax_batch1_over_torch` is the ratio of the medians.

Usage: python benchmarks/bench_inference.py [--faces 8] [--repeats 5] [--rounds 2]
           [--dtype float32] [--deconv-impl subpixel] [--conv-impl xla] [--no-torch] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ipcgan_jax import configlib, gan  # noqa: E402
from ipcgan_jax.constants import CAFFE_MEAN_BGR, CONV_IMPLS, NUM_AGE_GROUPS  # noqa: E402
from json_report import print_report, run_json  # noqa: E402

DEFAULT_TORCH_PYTHON = "/tmp/torch_venv/bin/python"
TORCH_SCRIPT = os.path.join(ROOT, "benchmarks", "torch_reference.py")


def _time_calls(fn, repeats: int) -> list[float]:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def _stats_ms(times: list[float], per: int) -> dict:
    return {"median_ms_per_face": round(statistics.median(times) / per * 1e3, 2),
            "min_ms_per_face": round(min(times) / per * 1e3, 2),
            "max_ms_per_face": round(max(times) / per * 1e3, 2),
            "faces_per_s": round(per / statistics.median(times), 3)}


def run(faces: int, repeats: int, dtype: str, deconv_impl: str | None, seed: int,
        conv_impl: str | None = None) -> dict:
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "g75_conv5.py"))
    config.compute_dtype = dtype
    if conv_impl:
        config.conv_impl = conv_impl
    if deconv_impl:
        config.model.generator.deconv_impl = deconv_impl
    size = config.data.image_size
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.uniform(0, 255, (faces, size, size, 3)) - np.asarray(CAFFE_MEAN_BGR), jnp.float32)
    state = gan.init_state(config, jax.random.key(seed))
    # Moving statistics from training-mode passes, so test mode normalises sensibly.
    generator = gan.build_generator(config)
    stats = state.g_batch_stats
    for group in range(NUM_AGE_GROUPS):
        _, new = generator.apply({"params": state.g_params, "batch_stats": stats}, images,
                                 jnp.full((faces,), group), train=True, mutable=["batch_stats"])
        stats = new["batch_stats"]
    variables = {"params": state.g_params, "batch_stats": stats}
    generate = gan.make_generate(config)

    single = jax.jit(generate)
    start = time.perf_counter()
    single_compiled = single.lower(variables, images[:1], jnp.zeros((1,), jnp.int32)).compile()
    compile_single_s = time.perf_counter() - start
    groups = [jnp.full((1,), g, jnp.int32) for g in range(NUM_AGE_GROUPS)]

    def one_face():
        return [single_compiled(variables, images[:1], g) for g in groups]

    pair_images = jnp.repeat(images, NUM_AGE_GROUPS, axis=0)[:, None]            # (F*5, 1, H, W, 3)
    pair_groups = jnp.tile(jnp.arange(NUM_AGE_GROUPS, dtype=jnp.int32), faces)[:, None]  # (F*5, 1)
    batched = jax.jit(jax.vmap(generate, in_axes=(None, 0, 0)))
    start = time.perf_counter()
    batched_compiled = batched.lower(variables, pair_images, pair_groups).compile()
    compile_batched_s = time.perf_counter() - start

    out_single = np.stack([np.asarray(y[0]) for y in one_face()])
    out_batched = np.asarray(batched_compiled(variables, pair_images, pair_groups))[:NUM_AGE_GROUPS, 0]
    cost = batched_compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    result = {
        "dtype": dtype, "faces": faces, "groups_per_face": NUM_AGE_GROUPS, "repeats": repeats,
        "deconv_impl": config.model.generator.get("deconv_impl", "default"), "conv_impl": gan.conv_impl(config),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "batch1": dict(_stats_ms(_time_calls(one_face, repeats), 1), compile_s=round(compile_single_s, 2)),
        "batched": dict(_stats_ms(_time_calls(lambda: batched_compiled(variables, pair_images, pair_groups),
                                              repeats), faces),
                        compile_s=round(compile_batched_s, 2), pairs_per_call=faces * NUM_AGE_GROUPS),
        "gflop_per_face": round(float(cost.get("flops", float("nan"))) / faces / 1e9, 3),
        "max_abs_diff_vs_batch1": float(np.max(np.abs(out_single - out_batched))),
    }
    return result


def run_torch(torch_python: str, repeats: int, seed: int, threads: int) -> dict:
    return run_json([torch_python, TORCH_SCRIPT, "--inference", "--steps", str(repeats), "--warmup", "1",
                     "--seed", str(seed), "--threads", str(threads)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=8, help="faces per batched call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="JAX / PyTorch alternations")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--deconv-impl", default=None, choices=["subpixel", "conv_transpose"])
    parser.add_argument("--conv-impl", default=None, choices=CONV_IMPLS,
                        help="how G's convs run (default: the config's, 'auto')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with_torch = not args.no_torch and os.path.exists(args.torch_python)
    jax_runs, torch_runs = [], []
    for round_index in range(args.rounds if with_torch else 1):
        print(f"[bench_inference] round {round_index + 1}", file=sys.stderr, flush=True)
        jax_runs.append(run(args.faces, args.repeats, args.dtype, args.deconv_impl, args.seed, args.conv_impl))
        if with_torch:
            torch_runs.append(run_torch(args.torch_python, args.repeats, args.seed, args.torch_threads))
    result = dict(jax_runs[-1], jax_rounds=[r["batch1"]["median_ms_per_face"] for r in jax_runs])
    good = [r for r in torch_runs if "error" not in r]
    if good:
        jax_median = statistics.median(r["batch1"]["median_ms_per_face"] for r in jax_runs)
        torch_median = statistics.median(r["median_ms_per_face"] for r in good)
        result.update(torch_rounds=[r["median_ms_per_face"] for r in good], torch=good[-1]["torch"],
                      torch_median_ms_per_face=torch_median,
                      jax_batch1_over_torch=round(jax_median / torch_median, 3))
    elif torch_runs:
        result["torch_error"] = torch_runs[-1]
    else:
        result["torch_skipped"] = "--no-torch" if args.no_torch else f"not found: {args.torch_python}"
    print_report(result, args.json, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
