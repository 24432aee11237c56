"""Export a GAN run's generator: the variables plus everything needed to use them alone.

    python -m ipcgan_jax.export --workdir=workdirs/utkface_cpu --out=my_generator \
        [--step=N] [--weights=average|live] [--note="..."] \
        [--results=workdirs/utkface_cpu/eval/step_N/results.json]

Writes OUT/variables (G's params and BatchNorm statistics) and OUT/metadata.json: the
run's config (so `ipcgan_jax.inference.load_generator` rebuilds the same generator, crop
framing and resolution), the step, and, when given, the evaluation results it was
measured with. `python -m ipcgan_jax.age photo.jpg --checkpoint=OUT` then uses it; the
generator shipped in ipcgan_jax/pretrained/ was written this way. OUT must not exist
or be empty: nothing is overwritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ipcgan_jax import __version__, checkpointing, inference
from ipcgan_jax.constants import GENERATOR_WEIGHTS


def export_generator(workdir: str, out_dir: str, *, step: int | None = None, weights: str = "average",
                     extra_metadata: dict | None = None) -> dict:
    """Writes the generator of the run in `workdir` (latest checkpoint, or `step`; its
    weight average when it kept one, unless `weights='live'`) to `out_dir`; returns the
    metadata written beside it."""
    loaded = inference.load_generator(workdir, step=step, weights=weights)
    if loaded.run_config is None:
        raise ValueError(f"{workdir} is already an exported generator, not a GAN run's workdir")
    metadata = {
        "network": "generator",
        "ipcgan_jax_version": __version__,
        "step": loaded.step,
        "generator_weights": loaded.weights,
        inference.RUN_CONFIG_KEY: loaded.run_config.to_dict(),
        **(extra_metadata or {}),
    }
    checkpointing.save_variables(out_dir, loaded.variables, metadata)
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipcgan_jax.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the GAN run's workdir")
    parser.add_argument("--out", required=True, help="new folder to write the generator into")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--weights", default="average", choices=GENERATOR_WEIGHTS,
                        help="for a run that kept a moving average of G's weights: it, or the live weights")
    parser.add_argument("--results", default=None, help="results.json of configs/eval.py to record beside it")
    parser.add_argument("--note", default="", help="free text to record (e.g. how long training took)")
    args = parser.parse_args(argv)
    extra = {}
    if args.results:
        try:
            with open(args.results) as f:
                extra["evaluation"] = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"--results {args.results}: {error}")
    if args.note:
        extra["note"] = args.note
    try:
        metadata = export_generator(args.workdir, args.out, step=args.step, weights=args.weights,
                                    extra_metadata=extra)
    except (checkpointing.CheckpointError, FileExistsError, ValueError) as error:  # the message names the cause
        hint = "; choose a checkpoint with --step=N" if isinstance(error, checkpointing.STEP_ERRORS) else ""
        print(f"error: {error}{hint}", file=sys.stderr)
        return 2
    print(f"exported the generator of {args.workdir} at step {metadata['step']} "
          f"({metadata['generator_weights']} weights) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
