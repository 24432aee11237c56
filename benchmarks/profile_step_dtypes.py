"""Where the faithful step's time goes on a CPU, float32 against compute_dtype='bfloat16':
one traced step each (jax.profiler, after 3 untimed), op time summed over XLA's worker
threads by kind; prints JSON. Results: benchmarks/README.md, "bfloat16".

  python benchmarks/profile_step_dtypes.py [--batch 8] [--conv-impl xla] [--trace-dir /tmp/profile_step]
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def op_kind(name: str) -> str:
    if name.startswith("ynn_fusion") or name.startswith("convolution"):
        return "conv (XLA: YNNPACK fusions, convolution thunks)"
    if "custom-call" in name or "custom_call" in name:
        return "custom calls (oneDNN convs)"
    if "convert" in name:
        return "fusions with a dtype conversion"
    if "reduce-window" in name or "select-and-scatter" in name:
        return "pooling"
    return "other"


def profile(batch: int, dtype: str, conv_impl: str, trace_dir: str) -> dict:
    import jax

    from bench_step import faithful_config, make_step_inputs
    from ipcgan_jax import gan

    config = faithful_config(batch, dtype, None, conv_impl=conv_impl)
    pool, frozen = make_step_inputs(config, 0, pool_size=1)
    state = gan.init_state(config, jax.random.key(0))
    step = jax.jit(gan.make_train_step(config), donate_argnums=0)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        state, metrics = step(state, pool[0], frozen)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    shutil.rmtree(trace_dir, ignore_errors=True)
    with jax.profiler.trace(trace_dir):
        state, metrics = step(state, pool[0], frozen)
        jax.block_until_ready(metrics)
    trace = json.load(gzip.open(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kinds, ops = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(("$", "ThunkExecutor", "CommonPjRt")) or "Pjit" in name \
                or "Await" in name:
            continue
        ms = event.get("dur", 0) / 1000
        kinds[op_kind(name)] += ms
        ops[re.sub(r"[.\d]+$", "", name)] += ms
    return {"dtype": dtype, "step_ms_median_of_last_2": round(1000 * statistics.median(times[1:]), 1),
            "op_ms_by_kind": {k: round(v, 1) for k, v in kinds.most_common()},
            "top_ops_ms": {k: round(v, 1) for k, v in ops.most_common(12)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--conv-impl", default="xla")
    parser.add_argument("--trace-dir", default="/tmp/profile_step")
    args = parser.parse_args()
    rows = [profile(args.batch, dtype, args.conv_impl, os.path.join(args.trace_dir, dtype))
            for dtype in ("float32", "bfloat16")]
    print(json.dumps({"batch": args.batch, "conv_impl": args.conv_impl, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
