"""Age classifier and age evaluator on real faces (UTKFace dev set), printed as JSON.

  python benchmarks/bench_utkface_classifiers.py --data /data/utkface_dev
      [--workdir /tmp/bench_utkface] [--age-steps N] [--evaluator-steps N]

The faces (200x200 aligned crops, labels.csv's age_group) are loaded into an in-memory
FaceSource with a seeded 80/20 per-image split (UTKFace has no identities, so the split
cannot be identity-disjoint). Both networks use the demo variant's sizes and settings
(configs/age_classifier.py:demo, configs/age_evaluator.py:demo), trained through
`ipcgan_jax.classifiers.train.train_classifier` on these faces.

Trunk of the age classifier: UTKFace has no identity labels, so no identity trunk can be
trained on it. The benchmark uses the demo's own trunk: configs/alexnet_identity.py:demo
trained on the synthetic faces (WORKDIR/alexnet_identity), i.e. exactly what the demo's
GAN is trained against. The age classifier's number therefore measures how well that
synthetic-face trunk transfers to real faces, not what a CACD-trained trunk would give.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ipcgan_jax import configlib  # noqa: E402
from ipcgan_jax.classifiers import reports  # noqa: E402
from ipcgan_jax.classifiers.train import train_classifier  # noqa: E402
from ipcgan_jax.data.sources import FaceSource  # noqa: E402
from ipcgan_jax.runlib.workdir import has_export  # noqa: E402


def load_utkface(data_dir: str, test_fraction: float, seed: int) -> tuple[FaceSource, FaceSource]:
    with open(os.path.join(data_dir, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    images = np.stack([np.asarray(Image.open(os.path.join(data_dir, "images", row["file"])).convert("RGB"))
                       for row in rows])
    age_group = np.array([int(row["age_group"]) for row in rows], np.int64)
    age = np.array([int(row["age"]) for row in rows], np.int64)
    order = np.random.default_rng(seed).permutation(len(rows))
    num_test = int(round(test_fraction * len(rows)))
    parts = {"test": np.sort(order[:num_test]), "train": np.sort(order[num_test:])}
    return tuple(FaceSource.from_arrays(
        {"image": images[idx], "age_group": age_group[idx], "age": age[idx],
         "identity": np.full(idx.size, -1, np.int64)}, name=f"utkface_dev:{split}")
        for split, idx in (("train", parts["train"]), ("test", parts["test"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True,
                        help="a folder of UTKFace chips with labels.csv (e.g. /data/utkface_dev)")
    parser.add_argument("--workdir", default="/tmp/bench_utkface")
    parser.add_argument("--age-steps", type=int, default=0, help="0: the demo's number of steps")
    parser.add_argument("--evaluator-steps", type=int, default=0, help="0: the demo's number of steps")
    args = parser.parse_args()

    start = time.perf_counter()
    train_faces, test_faces = load_utkface(args.data, test_fraction=0.2, seed=0)
    load_s = time.perf_counter() - start
    results = {"data": args.data, "train_images": len(train_faces), "test_images": len(test_faces),
               "load_s": round(load_s, 1)}

    trunk_dir = os.path.join(args.workdir, "alexnet_identity")
    trunk_config = configlib.load_config_file(os.path.join(ROOT, "configs", "alexnet_identity.py:demo"))
    if not has_export(trunk_dir):
        start = time.perf_counter()
        trunk = train_classifier(trunk_config, trunk_dir)
        results["trunk"] = {"data": "synthetic demo faces", "train_s": round(time.perf_counter() - start, 1),
                            "identity_accuracy_held_out": trunk.test_metrics["accuracy"]}

    for task, steps in (("age_classifier", args.age_steps), ("age_evaluator", args.evaluator_steps)):
        config = configlib.load_config_file(os.path.join(ROOT, "configs", f"{task}.py:demo"))
        config.data.name = "utkface_dev"  # recorded only: the faces are passed in
        if steps:
            config.num_steps = steps
            config.eval_every = steps
        if task == "age_classifier":
            config.frozen.alexnet = "../alexnet_identity/export"
        start = time.perf_counter()
        run = train_classifier(config, os.path.join(args.workdir, task),
                                           faces=(train_faces, test_faces))
        results[task] = {"test_accuracy": run.test_metrics["accuracy"],
                         "test_mae_groups": run.test_metrics["mae_groups"],
                         "num_steps": config.num_steps, "batch_size": config.batch_size,
                         "train_s": round(time.perf_counter() - start, 1),
                         "report": os.path.join(args.workdir, task, reports.REPORT_DIR)}
    results["chance_accuracy"] = float(np.bincount(test_faces.age_group).max() / len(test_faces))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
