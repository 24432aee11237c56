"""Training-step throughput against the number of (simulated) CPU devices; prints JSON.

Each device count runs in its own subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N, the data-parallel step of
ipcgan_jax.train (batch sharded over a 1-D mesh, parameters replicated) and the same
global batch. Simulated devices share the machine's cores: on a 2-core machine this
measures the overhead of the sharded program (collectives, smaller per-device convs), not
a speed-up; on real multi-device hardware the same script shows the scaling.

Usage: python benchmarks/bench_devices.py [--devices 1 2 4 8] [--batch 8] [--steps 3]
           [--variant ''|demo|quick] [--json FILE]
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


def run_worker(args) -> dict:
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    from ipcgan_jax import configlib, gan, parallel

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_step import make_step_inputs

    variant = f":{args.variant}" if args.variant else ""
    config = configlib.load_config_file(os.path.join(ROOT, "configs", "g75_conv5.py") + variant)
    config.batch_size = args.batch
    devices = jax.devices()
    mesh = parallel.make_mesh(devices)
    parallel.check_batch_size(config.batch_size, mesh)
    replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    pool, frozen = make_step_inputs(config, args.seed)
    pool = [parallel.shard_batch(jax.device_get(b), mesh) for b in pool]
    frozen = parallel.replicate(jax.device_get(frozen), mesh)
    state = jax.jit(lambda r: gan.init_state(config, r), out_shardings=replicated)(jax.random.key(args.seed))
    start = time.perf_counter()
    step = jax.jit(gan.make_train_step(config), donate_argnums=(0,),
                   in_shardings=(replicated, sharded, replicated),
                   out_shardings=(replicated, replicated)).lower(state, pool[0], frozen).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(args.warmup + args.steps):
        begin = time.perf_counter()
        state, metrics = step(state, pool[i % len(pool)], frozen)
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            times.append(time.perf_counter() - begin)
    median = statistics.median(times)
    return dict(devices=len(devices), batch=config.batch_size, variant=args.variant or "faithful",
                median_ms=round(median * 1e3, 1), min_ms=round(min(times) * 1e3, 1),
                max_ms=round(max(times) * 1e3, 1), images_per_s=round(config.batch_size / median, 3),
                compile_s=round(compile_s, 2), d_loss=float(metrics["d_loss"]),
                finite=bool(np.isfinite(float(metrics["d_loss"]))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch", type=int, default=8, help="global batch (divisible by every count)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variant", default="", choices=["", "demo", "quick"],
                        help="'' = the faithful networks; smaller variants for a quick look")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)), flush=True)
        return 0
    bad = [n for n in args.devices if args.batch % n]
    if bad:
        parser.error(f"--batch {args.batch} is not divisible by device counts {bad}")
    report = {"cpu_cores": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()],
              "note": "simulated devices share the CPU cores: overhead, not speed-up, on a small machine",
              "results": []}
    for count in args.devices:
        print(f"[bench_devices] {count} device(s)", file=sys.stderr, flush=True)
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
        env["JAX_PLATFORMS"] = "cpu"
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(args.batch),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--variant", args.variant,
                   "--seed", str(args.seed)]
        result = run_json(command, env)
        report["results"].append(dict(result, devices=count) if "error" in result else result)
    base = next((r for r in report["results"] if r.get("devices") == 1 and "median_ms" in r), None)
    for r in report["results"]:
        if base and "median_ms" in r:
            r["throughput_vs_1_device"] = round(base["median_ms"] / r["median_ms"], 3)
    report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
