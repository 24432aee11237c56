"""One process of a localhost multi-process training run (started by test_multiprocess.py).

  python tests/multiprocess_worker.py --process_id=0 --num_processes=2 --port=12345 \
      --devices_per_process=2 --frozen_dir=DIR --workdir=DIR --num_steps=4 --state_out=FILE

Every process joins the same `jax.distributed` cluster over localhost (CPU collectives:
gloo, jax's default), trains the same config with `train_and_evaluate` and writes the
final state it holds to `--state_out` (one .npz per process).
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(frozen_dir: str, num_steps: int):
    """The tiny GAN config shared by the multi-process runs and their one-process reference.

    Adam's eps is 0.1 as in test_gan_step.py: gradients that are exactly 0 in exact
    arithmetic (conv biases before a BN) would otherwise turn float32 round-off, which
    depends on how the reduction is split over devices, into updates of size lr."""
    from tests.helpers import tiny_gan_config

    config = tiny_gan_config()
    config.frozen.alexnet = os.path.join(frozen_dir, "alexnet")
    config.frozen.age_classifier = os.path.join(frozen_dir, "age")
    config.optimizer.eps = 0.1
    config.optimizer.learning_rate = 0.01
    config.num_steps = num_steps
    config.checkpoint.every = 2
    config.sample_every = 2
    # XLA's conv: this test is about the data-parallel layout. With im2col the weight
    # gradients are dots over rows split between the processes, summed in another order,
    # and 4 GAN steps grew that round-off past the 1e-3 tolerance (G conv1's Adam moments,
    # up to 1% on 7% of entries); the conv paths are compared in
    # test_layers_speed_equivalence.py.
    config.conv_impl = "xla"
    return config


def flatten_state(state) -> dict:
    import jax
    import numpy as np

    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--frozen_dir", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num_steps", type=int, required=True)
    parser.add_argument("--state_out", required=True)
    parser.add_argument("--timeout_s", type=float, default=0,
                        help="print every thread's stack and exit after this long (0: never)")
    args = parser.parse_args()
    if args.timeout_s:
        # A process stuck in a collective (e.g. one its peers never join) says where.
        faulthandler.dump_traceback_later(args.timeout_s, exit=True)

    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    jax.config.update("jax_num_cpu_devices", args.devices_per_process)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    cache_dir = os.environ.get("IPCGAN_TEST_JAX_CACHE")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=60)
    try:
        assert jax.process_count() == args.num_processes
        assert len(jax.devices()) == args.num_processes * args.devices_per_process

        from ipcgan_jax import tasks

        state = tasks.train_and_evaluate(make_config(args.frozen_dir, args.num_steps), args.workdir)
        np.savez(args.state_out, **flatten_state(state))
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
