"""Convert the original IPCGAN weights into this project's format.

    python -m ipcgan_jax.convert --out DIR [--acgan CKPT] [--alexnet CKPT]
                                 [--age-classifier CKPT] [--bvlc NPY]

Output layout, one directory per network, each written by
`ipcgan_jax.checkpointing.save_variables` (read back with `load_variables`):

    DIR/generator/       --acgan: G params + batch_stats (incl. zero-debias shadows)
    DIR/discriminator/   --acgan: D params + batch_stats
    DIR/alexnet/         --alexnet: trunk conv1..5, fc6, fc7 + identity head new_1, new_2;
                         or --bvlc: the ImageNet trunk conv1..5, fc6, fc7 only
    DIR/age_classifier/  --age-classifier: age head age_fc6..age_fc8 params

For the GAN, AlexNet's params are those of `alexnet/` merged with `age_classifier/`.
Each `metadata.json` names the network, its source file and what the import ignored.
DIR must not exist or be empty: nothing is overwritten. Shapes are the faithful ones
(docs/faithfulness.md §3-§6); a checkpoint that does not match by name and shape is
refused.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from tqdm import tqdm

from ipcgan_jax import __version__
from ipcgan_jax.checkpointing import save_variables
from ipcgan_jax.weights.bvlc import load_bvlc_alexnet
from ipcgan_jax.weights.templates import (Variables, age_classifier_variables_template,
                                          alexnet_variables_template, discriminator_variables_template,
                                          generator_variables_template)
from ipcgan_jax.weights.tf1 import ImportReport, load_tf1_checkpoint

logger = logging.getLogger(__name__)


def _metadata(network: str, source: str, source_format: str,
              report: ImportReport | None = None) -> dict:
    metadata = {"network": network, "source": os.path.abspath(source),
                "source_format": source_format, "converted_by": f"ipcgan_jax.convert {__version__}"}
    if report is not None:
        metadata.update(ignored_bookkeeping=report.num_ignored,
                        skipped_other_networks=len(report.skipped),
                        batch_norms_without_shadows=list(report.steady_state_batch_norms))
    return metadata


# A network read from a source: (name, variables, metadata), written to OUT/<name>.
Converted = tuple[str, Variables, dict]


def _read_tf1(checkpoint: str, expect: dict[str, Variables]) -> list[Converted]:
    variables, report = load_tf1_checkpoint(checkpoint, expect=expect)
    return [(network, network_variables, _metadata(network, checkpoint, "tf1_checkpoint", report))
            for network, network_variables in variables.items()]


def read_acgan(checkpoint: str) -> list[Converted]:
    """`acgan.model-*` -> generator and discriminator."""
    return _read_tf1(checkpoint, {"generator": generator_variables_template(),
                                  "discriminator": discriminator_variables_template()})


def read_alexnet(checkpoint: str) -> list[Converted]:
    """`pre_trained/alexnet.model-*` -> alexnet (trunk and identity head)."""
    return _read_tf1(checkpoint, {"alexnet": alexnet_variables_template()})


def read_age_classifier(checkpoint: str) -> list[Converted]:
    """`pre_trained/age_classifier.model-*` -> age_classifier (age head)."""
    return _read_tf1(checkpoint, {"age_classifier": age_classifier_variables_template()})


def read_bvlc_alexnet(npy_path: str) -> list[Converted]:
    """`bvlc_alexnet.npy` -> alexnet (ImageNet trunk, no identity head)."""
    return [("alexnet", {"params": load_bvlc_alexnet(npy_path)}, _metadata("alexnet", npy_path, "bvlc_alexnet_npy"))]


def convert(out_dir: str, *, acgan: str | None = None, alexnet: str | None = None,
            age_classifier: str | None = None, bvlc: str | None = None) -> None:
    """Converts every given source into out_dir (which must not exist or be empty). Every
    source is read and checked before anything is written: a bad one leaves no output."""
    if alexnet and bvlc:
        raise ValueError("--alexnet and --bvlc both write DIR/alexnet; give one of them")
    jobs = [(source, read) for source, read in ((acgan, read_acgan), (alexnet, read_alexnet),
                                                (age_classifier, read_age_classifier),
                                                (bvlc, read_bvlc_alexnet)) if source]
    if not jobs:
        raise ValueError("nothing to convert: give at least one of --acgan, --alexnet, "
                         "--age-classifier, --bvlc")
    for source, _ in jobs:
        if not (os.path.exists(source) or os.path.exists(source + ".index")):
            raise FileNotFoundError(f"no such checkpoint or file: {source}")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory; refusing to overwrite it")
    converted = []
    for source, read in tqdm(jobs, desc="reading", unit="file"):
        converted.extend(read(source))
        logger.info("read %s", source)
    os.makedirs(out_dir, exist_ok=True)
    for network, variables, metadata in converted:
        save_variables(os.path.join(out_dir, network), variables, metadata)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ipcgan_jax.convert",
        description="Convert the original IPCGAN weights (TF1 checkpoints, bvlc_alexnet.npy) "
                    "into ipcgan_jax's per-network variable directories: OUT/generator, "
                    "OUT/discriminator, OUT/alexnet, OUT/age_classifier.")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory; must not exist or be empty (nothing is overwritten)")
    parser.add_argument("--acgan", metavar="CKPT",
                        help="GAN checkpoint prefix, e.g. checkpoints/acgan.model-399999 "
                             "-> OUT/generator, OUT/discriminator")
    parser.add_argument("--alexnet", metavar="CKPT",
                        help="identity AlexNet, e.g. pre_trained/alexnet.model-292000 -> OUT/alexnet")
    parser.add_argument("--age-classifier", metavar="CKPT",
                        help="age head, e.g. pre_trained/age_classifier.model-300000 "
                             "(with or without the alexnet/ prefix) -> OUT/age_classifier")
    parser.add_argument("--bvlc", metavar="NPY",
                        help="ImageNet bvlc_alexnet.npy -> OUT/alexnet (trunk only; "
                             "not together with --alexnet)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args.out, acgan=args.acgan, alexnet=args.alexnet,
                age_classifier=args.age_classifier, bvlc=args.bvlc)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
