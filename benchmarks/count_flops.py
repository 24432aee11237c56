"""Model FLOPs of the faithful training step, from XLA's cost analysis of the lowered
(unoptimised) HLO on the CPU; prints JSON {"batch": ..., "dtype": ..., "gflop_per_step": ...}.

GPU backends hand convolutions to cuDNN as custom calls that their cost analysis does not
count, so utilisation on a GPU is computed from this count (launch/gpu_benchmark.sh).

  JAX_PLATFORMS=cpu python benchmarks/count_flops.py --batch 8 32 128 --dtype float32 bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def count(batch: int, dtype: str) -> float:
    import jax

    from benchmarks.bench_step import faithful_config, make_step_inputs
    from ipcgan_jax import gan

    # XLA's conv path: the model's FLOPs, as the GPU runs it (im2col's patches and
    # data-gradient dots count more)
    config = faithful_config(batch, dtype, None, conv_impl="xla")
    pool, frozen = make_step_inputs(config, 0, pool_size=1)
    state = jax.eval_shape(lambda: gan.init_state(config, jax.random.key(0)))
    analysis = jax.jit(gan.make_train_step(config)).lower(state, pool[0], frozen).cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    args = parser.parse_args()
    rows = [{"batch": b, "dtype": d, "gflop_per_step": round(count(b, d), 2)}
            for b in args.batch for d in args.dtype]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
