"""Trains or evaluates IPCGAN from a config file.

  python main.py --config=configs/g75_conv5.py --workdir=workdirs/g75_conv5
  python main.py --config=configs/demo.py --workdir=workdirs/demo
  python main.py --config=configs/g75_conv5.py:quick --workdir=/tmp/quick --config.num_steps=10

Rerunning the same command resumes from the latest checkpoint in --workdir. Config
fields can be overridden with --config.<field>=<value>. Multi-host runs call
`jax.distributed.initialize()` first (--distributed, see launch/). A training run holds
WORKDIR/run.lock; a second run on the same workdir is refused. Ctrl-C (like SIGTERM)
saves at the next log or checkpoint step and stops; a second Ctrl-C stops at once.
"""
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ipcgan_jax import checkpointing, configlib
from ipcgan_jax.runlib.lock import WorkdirLockedError
from ipcgan_jax.runlib.loop import NonFiniteLossError
from ipcgan_jax.tasks import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (optionally path:argument).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples (resumes if it holds a run).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host clusters, SLURM, TPU pods).")
flags.DEFINE_bool("take_over_lock", False, "Take over a workdir lock left by a run on another host that is gone "
                  "(locks of dead processes on this host are taken over anyway).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, after `configlib.check_config_flags` (a bad --config file or an
    override of a key the config lacks, in one line)."""
    try:
        configlib.check_config_flags(argv)
    except configlib.ConfigError as error:
        raise SystemExit(f"FATAL Flags parsing error: {error}") from None
    return app.parse_flags_with_usage(argv)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # keep the console to the progress bars and results
        logging.set_verbosity(logging.WARNING)
    if FLAGS.distributed:
        jax.distributed.initialize()
    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir, take_over_lock=FLAGS.take_over_lock)
    # One line: each message says what failed and what to do (a missing dataset or pack
    # names the command that makes it).
    except (configlib.ConfigError, checkpointing.CheckpointError, WorkdirLockedError, NonFiniteLossError,
            FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:  # a second Ctrl-C (the first saves at the next log step and stops)
        print("interrupted: the steps since the last checkpoint are lost; rerun the command to resume",
              file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
