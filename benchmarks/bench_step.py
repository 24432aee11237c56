"""Speed of the faithful IPCGAN training step in JAX, side by side with PyTorch; prints JSON.

One step = one D update and one G update (docs/faithfulness.md §10), faithful networks
(G 32 features, 6 residual blocks; D 64 features, 512 outputs; AlexNet at full size,
227x227, random and frozen), random data already in memory. For every (batch, dtype) the
two programs run alternately in fresh subprocesses, A B A B ... (`--rounds`), because on a
shared machine load changes over minutes: compare the medians of the same round pair, and
the ratio.

JAX side (this file, `--worker jax`): median / min / max ms over `--steps` timed steps
after `--warmup`, images/s = batch / median, compile time (round 1 with an empty
persistent compilation cache = cold; later rounds reuse the cache), XLA cost-analysis
FLOPs per step of the program itself and of the model (the step with XLA's conv, one count
for every `--conv-impl`: oneDNN's calls are invisible to XLA's count), and achieved GFLOP/s
on the model's count against this machine's float32 peak (a large matmul measured in the
same run, and the FMA peak derived from lscpu).
PyTorch side: benchmarks/torch_reference.py (an independent PyTorch implementation of the
same networks and step; `--torch-script` picks another) in the torch venv (`--torch-python`),
with `--bf16` for the bfloat16 rows. The JAX bfloat16 rows use
`compute_dtype='bfloat16'` (float32 parameters, BN statistics, optimizer states, losses).

Usage:
  python benchmarks/bench_step.py [--batch 8 32] [--dtype float32 bfloat16] [--rounds 2]
      [--steps 5] [--warmup 1] [--conv-impl auto onednn] [--no-torch] [--deconv-impl subpixel]
      [--torch-device cuda] [--torch-variants nchw channels-last compile] [--json FILE]
  python benchmarks/bench_step.py --worker jax --batch 8 --dtype float32 --cache-dir DIR
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

from ipcgan_jax.constants import CAFFE_MEAN_BGR, CONV_IMPLS
from json_report import print_report, run_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TORCH_PYTHON = "/tmp/torch_venv/bin/python"
DEFAULT_TORCH_SCRIPT = os.path.join(ROOT, "benchmarks", "torch_reference.py")


# ----------------------------------------------------------------------------- machine
def describe_cpu() -> dict:
    """CPU model, vector ISA and the float32 FMA peak derived from them (no JAX needed)."""
    info = {"cpu": "", "cores": os.cpu_count(), "mhz": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
        mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
        info["mhz"] = float(mhz.group(1)) if mhz else None
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
        info["flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except (OSError, AttributeError):
        return info
    # fp32 FLOP/cycle/core: 2 FMA pipes x lanes x 2 (AMD Zen 2-4 and Intel server cores
    # have 2 FMA pipes; Zen 4 runs AVX-512 as 2 x 256 bit, so it keeps 32)
    lanes = 16 if "avx512f" in flags and "Intel" in info["cpu"] else 8 if "fma" in flags else 4
    info["fp32_flop_per_cycle_per_core"] = 2 * lanes * 2
    if info["mhz"]:
        info["fp32_peak_gflops_fma"] = round(
            info["cores"] * info["mhz"] / 1e3 * info["fp32_flop_per_cycle_per_core"], 1)
    info["avx512_bf16"] = "avx512_bf16" in flags
    return info


# ----------------------------------------------------------------------------- JAX worker
def measure_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a float32 (size x size) @ (size x size) matmul in JAX."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def make_step_inputs(config, seed: int, pool_size: int = 3):
    """A pool of random batches (already on the device) and random frozen AlexNet params."""
    import jax
    import numpy as np

    from ipcgan_jax import gan

    rng = np.random.default_rng(seed)
    n, size, alex = config.batch_size, config.data.image_size, config.data.alexnet_size
    mean = np.asarray(CAFFE_MEAN_BGR, np.float32)
    pool = []
    for _ in range(pool_size):
        pool.append(jax.device_put({
            "source_d": (rng.uniform(0, 255, (n, size, size, 3)) - mean).astype(np.float32),
            "source_g": (rng.uniform(0, 255, (n, size, size, 3)) - mean).astype(np.float32),
            "source_g_alexnet": (rng.uniform(0, 255, (n, alex, alex, 3)) - mean).astype(np.float32),
            "real": rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32),
            "target_group": np.zeros((n,), np.int32), "false_group": np.zeros((n,), np.int32)}))
    frozen = gan.build_alexnet(config).init(jax.random.key(seed + 1),
                                            np.zeros((1, alex, alex, 3), np.float32))["params"]
    # Scaled down so activations stay in the range of a trained network (no inf/denormals).
    frozen = jax.tree.map(lambda x: x * 0.25, frozen)
    return pool, frozen


def faithful_config(batch: int, dtype: str, deconv_impl: str | None, conv_impl: str | None = None):
    from ipcgan_jax import configlib

    config = configlib.load_config_file(os.path.join(ROOT, "configs", "g75_conv5.py"))
    config.batch_size = batch
    config.compute_dtype = dtype
    if deconv_impl:
        config.model.generator.deconv_impl = deconv_impl
    if conv_impl:
        config.conv_impl = conv_impl
    return config


def run_jax_worker(args) -> dict:
    if args.cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import jax
    import numpy as np

    sys.path.insert(0, ROOT)
    from ipcgan_jax import gan

    config = faithful_config(args.batch[0], args.dtype[0], args.deconv_impl,
                             args.conv_impl[0] if args.conv_impl else None)
    pool, frozen = make_step_inputs(config, args.seed)
    state = jax.jit(lambda rng: gan.init_state(config, rng))(jax.random.key(args.seed))
    start = time.perf_counter()
    lowered = jax.jit(gan.make_train_step(config), donate_argnums=(0,)).lower(state, pool[0], frozen)
    traced_s = time.perf_counter() - start
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    # The model's FLOPs, one count for every conv_impl: XLA's analysis of the step with XLA's
    # conv, before optimisation (im2col's patches add work; oneDNN's calls are not counted).
    xla_config = faithful_config(args.batch[0], args.dtype[0], args.deconv_impl, "xla")
    model_cost = jax.jit(gan.make_train_step(xla_config)).lower(state, pool[0], frozen).cost_analysis()
    model_flops = float(model_cost.get("flops", float("nan")))

    rng = np.random.default_rng(args.seed)
    times = []
    metrics = None
    for i in range(args.warmup + args.steps):
        target = int(rng.integers(5))
        false = int((target + 1 + rng.integers(4)) % 5)
        batch = dict(pool[i % len(pool)], target_group=np.full((config.batch_size,), target, np.int32),
                     false_group=np.full((config.batch_size,), false, np.int32))
        batch = dict(batch, source_g=pool[(i + 1) % len(pool)]["source_g"],
                     source_g_alexnet=pool[(i + 1) % len(pool)]["source_g_alexnet"])
        begin = time.perf_counter()
        state, metrics = compiled(state, batch, frozen)
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            times.append(time.perf_counter() - begin)
    median = statistics.median(times)
    losses = {k: float(metrics[k]) for k in ("d_loss", "g_adversarial_loss", "g_feature_loss", "g_age_loss")}
    result = dict(framework="jax", jax=jax.__version__, batch=config.batch_size, dtype=config.compute_dtype,
                  deconv_impl=config.model.generator.get("deconv_impl", "default"),
                  conv_impl=gan.conv_impl(config),
                  median_ms=round(median * 1e3, 1), min_ms=round(min(times) * 1e3, 1),
                  max_ms=round(max(times) * 1e3, 1), images_per_s=round(config.batch_size / median, 3),
                  trace_s=round(traced_s, 2), compile_s=round(compile_s, 2),
                  cost_analysis_gflop_per_step=round(flops / 1e9, 2), model_gflop_per_step=round(model_flops / 1e9, 2),
                  achieved_gflops=round(model_flops / median / 1e9, 2), steps=args.steps, warmup=args.warmup,
                  xla_flags=os.environ.get("XLA_FLAGS", ""), last_losses=losses)
    if args.measure_peak:
        result["matmul_peak_gflops"] = round(measure_matmul_peak(), 1)
    if not all(np.isfinite(v) for v in losses.values()):
        result["error"] = "non-finite loss"
    return result


# ----------------------------------------------------------------------------- orchestration
def jax_command(args, batch: int, dtype: str, conv_impl: str | None, cache_dir: str,
                measure_peak: bool) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "jax", "--batch", str(batch),
               "--dtype", dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--seed", str(args.seed), "--cache-dir", cache_dir]
    if args.deconv_impl:
        command += ["--deconv-impl", args.deconv_impl]
    if conv_impl:
        command += ["--conv-impl", conv_impl]
    return command + (["--measure-peak"] if measure_peak else [])


# PyTorch's variants (--torch-variants): torch_reference.py's flags for each.
TORCH_VARIANTS = {"nchw": [], "channels-last": ["--channels-last"], "compile": ["--compile"],
                  "channels-last+compile": ["--channels-last", "--compile"]}


def torch_command(args, batch: int, dtype: str, variant: str = "nchw") -> list[str]:
    command = [args.torch_python, args.torch_script, "--batch", str(batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.torch_threads), "--seed", str(args.seed),
               "--device", args.torch_device, *TORCH_VARIANTS[variant]]
    return command + (["--bf16"] if dtype == "bfloat16" else [])


def _summary(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error") if runs else "no runs"}
    return {"median_ms": round(statistics.median(r["median_ms"] for r in ok), 1),
            "min_ms": round(min(r["min_ms"] for r in ok), 1),
            "max_ms": round(max(r["max_ms"] for r in ok), 1),
            "images_per_s": round(ok[0]["batch"] / (statistics.median(r["median_ms"] for r in ok) / 1e3), 3)}


def _jax_summary(runs: list[dict]) -> dict:
    summary = _summary(runs)
    good = [r for r in runs if "error" not in r]
    if good:
        summary.update(conv_impl=good[0]["conv_impl"],
                       compile_cold_s=good[0]["compile_s"] if runs[0] is good[0] else None,
                       compile_cached_s=(statistics.median(r["compile_s"] for r in good[1:])
                                         if len(good) > 1 else None),
                       cost_analysis_gflop_per_step=good[0]["cost_analysis_gflop_per_step"],
                       model_gflop_per_step=good[0]["model_gflop_per_step"])
        summary["achieved_gflops"] = round(good[0]["model_gflop_per_step"] / (summary["median_ms"] / 1e3), 2)
    return summary


def run_comparison(args) -> dict:
    report = {"machine": describe_cpu(), "load_avg_start": [round(x, 2) for x in os.getloadavg()],
              "settings": dict(steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                               torch_threads=args.torch_threads, torch_device=args.torch_device,
                               torch_variants=args.torch_variants, deconv_impl=args.deconv_impl,
                               xla_flags=os.environ.get("XLA_FLAGS", "")),
              "results": []}
    torch_ok = (not args.no_torch and os.path.exists(args.torch_python) and bool(args.torch_script)
                and os.path.exists(args.torch_script))
    if not args.no_torch and not torch_ok:
        report["torch_skipped"] = ("no --torch-script given" if not args.torch_script
                                   else f"not found: {args.torch_python} or {args.torch_script}")
    conv_impls = args.conv_impl or [None]
    measured_peak = False
    for batch in args.batch:
        for dtype in args.dtype:
            cache_dirs = {impl: tempfile.mkdtemp(prefix="ipcgan_bench_cache_") for impl in conv_impls}
            jax_runs = {impl: [] for impl in conv_impls}
            torch_variant_runs = {variant: [] for variant in args.torch_variants}
            for round_index in range(args.rounds):
                print(f"[bench_step] batch {batch} {dtype} round {round_index + 1}/{args.rounds}",
                      file=sys.stderr, flush=True)
                for impl in conv_impls:  # A B C A B C: every program in every round
                    run = run_json(jax_command(args, batch, dtype, impl, cache_dirs[impl], not measured_peak))
                    jax_runs[impl].append(run)
                    measured_peak = measured_peak or "matmul_peak_gflops" in run
                if torch_ok:
                    for variant in args.torch_variants:
                        torch_variant_runs[variant].append(run_json(torch_command(args, batch, dtype, variant)))
            row = {"batch": batch, "dtype": dtype, "jax": {}, "jax_runs": jax_runs}
            torch_runs = []
            if torch_ok:
                # Compared with PyTorch's fastest variant (with one variant, that one).
                summaries = {variant: _summary(runs) for variant, runs in torch_variant_runs.items()}
                timed = [v for v, summary in summaries.items() if "median_ms" in summary]
                best = min(timed, key=lambda v: summaries[v]["median_ms"]) if timed else args.torch_variants[0]
                torch_runs = torch_variant_runs[best]
                row["torch"] = dict(summaries[best], variant=best)
                if len(summaries) > 1:  # every variant's runs, the best one's among them
                    row["torch_variants"] = summaries
                    row["torch_variant_runs"] = torch_variant_runs
                else:
                    row["torch_runs"] = torch_runs
            for impl, runs in jax_runs.items():
                label = impl or "config"
                row["jax"][label] = summary = _jax_summary(runs)
                pairs = [(j["median_ms"], t["median_ms"]) for j, t in zip(runs, torch_runs)
                         if "error" not in j and "error" not in t]
                if pairs:
                    summary["jax_over_torch_per_round"] = [round(j / t, 3) for j, t in pairs]
                    summary["jax_over_torch_median_ratio"] = round(
                        statistics.median(j for j, _ in pairs) / statistics.median(t for _, t in pairs), 3)
            report["results"].append(row)
            if args.json:  # each finished row is kept if a later one is cut short (a GPU lease)
                with open(args.json, "w") as file:
                    json.dump(report, file, indent=1)
    for run in (r for row in report["results"] for runs in row["jax_runs"].values() for r in runs):
        if "matmul_peak_gflops" in run:
            report["machine"]["matmul_peak_gflops_measured"] = run["matmul_peak_gflops"]
    peak = report["machine"].get("matmul_peak_gflops_measured")
    for row in report["results"]:
        flops = next((s["model_gflop_per_step"] for s in row["jax"].values()
                      if "model_gflop_per_step" in s), None)
        for summary in row["jax"].values():
            if peak and "achieved_gflops" in summary:
                summary["fraction_of_matmul_peak"] = round(summary["achieved_gflops"] / peak, 3)
        if "torch" in row and flops and "error" not in row["torch"]:
            # Same networks and step: the model's FLOP count (XLA's, of its conv path) applies
            # to both (PyTorch's own counter agreed within 5% in the probe).
            row["torch"]["achieved_gflops"] = round(flops / (row["torch"]["median_ms"] / 1e3), 2)
    report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=2, help="A B alternations per (batch, dtype)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deconv-impl", default=None, choices=["subpixel", "conv_transpose"],
                        help="transposed-conv implementation (default: the config default)")
    parser.add_argument("--conv-impl", nargs="+", default=None, choices=CONV_IMPLS,
                        help="how the convs run, one JAX program each, alternating (default: the config's)")
    parser.add_argument("--no-torch", action="store_true", help="JAX only (e.g. on a GPU machine)")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON)
    parser.add_argument("--torch-script", default=DEFAULT_TORCH_SCRIPT,
                        help="the PyTorch implementation of the same step")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--torch-variants", nargs="+", default=["nchw"], choices=list(TORCH_VARIANTS),
                        help="PyTorch variants run in every round; the ratio is against the fastest")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    parser.add_argument("--worker", choices=["jax"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help="worker: persistent compilation cache")
    parser.add_argument("--measure-peak", action="store_true", help="worker: also time a large matmul")
    args = parser.parse_args(argv)
    if args.worker == "jax":
        result = run_jax_worker(args)
        print(json.dumps(result), flush=True)
        return 0 if "error" not in result else 1
    report = run_comparison(args)
    print_report(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
