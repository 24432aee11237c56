"""Throughput of the GAN input pipeline (ipcgan_jax.data.batches, either backend), printed as JSON.

Images/s counts every image the pipeline delivers: three batches per step (D sources,
G sources, real images), so 3 * batch_size per step. Two sources, both with faces stored
at 400x400 like the original's crops and scaled 400 -> 128 (and -> 227 for AlexNet):
  in_memory: synthetic faces held in a numpy array (FaceSource.from_arrays);
  tfds_jpeg: the same faces written as files and built with the ImageFolder TFDS builder
    ("prealigned" config: JPEG 400x400 crops in array_record, the format the CACD builder
    writes), read by random access with JPEG decoding per image.

Usage: python benchmarks/bench_pipeline.py [--steps 40] [--train-steps 2] [--backend numpy]
In the same run it also times the faithful training step at the same batch size on this
machine (benchmarks/bench_step.py's JAX worker, in a subprocess after the pipeline
measurements) and reports the images/s the step consumes (the same 3 * batch_size images
per step) and how many times faster the pipeline delivers them (the goal is >= 10x).
--train-images-per-s X uses a number measured elsewhere instead.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipcgan_jax.constants import DATA_BACKENDS  # noqa: E402
from ipcgan_jax.data.batches import backend_batches  # noqa: E402
from ipcgan_jax.data.plan import GanPlan  # noqa: E402
from ipcgan_jax.data.sources import FaceSource  # noqa: E402

AGE_OF_GROUP = (15, 25, 35, 45, 55)


def make_faces(num_identities: int, images_per_identity: int, size: int, seed: int) -> dict:
    """Synthetic faces with every age group, from ipcgan_jax.data.synthetic."""
    from ipcgan_jax.data import synthetic

    if hasattr(synthetic, "make_dataset"):
        return synthetic.make_dataset(num_identities, images_per_identity, size=size, seed=seed)
    # Stand-in while make_dataset is not there: its renderer, groups cycling per identity.
    identity = np.repeat(np.arange(num_identities), images_per_identity)
    age_group = (np.arange(identity.size) + identity) % 5
    attributes = synthetic.sample_identities(num_identities, seed)
    rows = type(attributes)(**{name: np.asarray(value)[identity]
                               for name, value in vars(attributes).items()})
    images = synthetic.render_faces(rows, age_group, size=size, nuisance_seed=seed)
    return {"image": images, "age_group": age_group, "identity": identity,
            "age": np.asarray(AGE_OF_GROUP)[age_group]}


def build_tfds_source(faces: dict, workdir: str) -> FaceSource:
    """Writes the faces as PNG files + labels.csv and builds them with ImageFolder."""
    import tensorflow_datasets as tfds

    from ipcgan_jax.data.image_folder import ImageFolder

    manual_dir = os.path.join(workdir, "manual")
    os.makedirs(manual_dir)
    with open(os.path.join(manual_dir, "labels.csv"), "w", newline="") as labels:
        writer = csv.writer(labels)
        writer.writerow(["path", "age", "identity"])
        for index, image in enumerate(faces["image"]):
            file_name = f"face_{index:05d}.png"
            Image.fromarray(image).save(os.path.join(manual_dir, file_name))
            age = AGE_OF_GROUP[int(faces["age_group"][index])]
            writer.writerow([file_name, age, f"person_{int(faces['identity'][index])}"])
    data_dir = os.path.join(workdir, "tfds")
    builder = ImageFolder(config="prealigned", data_dir=data_dir, num_workers=2)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return FaceSource.from_tfds(ImageFolder, "train", data_dir, "prealigned")


def measure(source: FaceSource, *, backend: str, batch_size: int, image_size: int,
            alexnet_size: int, steps: int, warmup: int, prefetch: int) -> dict:
    pipeline = backend_batches(GanPlan(source, batch_size=batch_size, seed=0, image_size=image_size,
                                       alexnet_size=alexnet_size), backend)
    batches = pipeline.batches(num_steps=warmup + steps, prefetch=prefetch)
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    delivered = sum(1 for _ in batches)
    seconds = time.perf_counter() - start
    return {"steps": delivered, "seconds": round(seconds, 3),
            "steps_per_s": round(delivered / seconds, 2),
            "images_per_s": round(3 * batch_size * delivered / seconds, 1)}


def time_training_step(batch_size: int, steps: int) -> dict:
    """The faithful float32 step at `batch_size` on this machine (bench_step's JAX worker):
    the images/s it consumes, counting its three image batches per step like the pipeline."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_step.py")
    command = [sys.executable, script, "--worker", "jax", "--batch", str(batch_size),
               "--dtype", "float32", "--steps", str(steps), "--warmup", "1"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    step = json.loads(output.strip().splitlines()[-1])
    return {"median_step_ms": step["median_ms"], "steps": steps,
            "images_per_s": round(3 * batch_size / (step["median_ms"] / 1e3), 3),
            "source": "benchmarks/bench_step.py --worker jax (same run)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=DATA_BACKENDS, default="tfdata", help="input backend")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--alexnet-size", type=int, default=227)
    parser.add_argument("--stored-size", type=int, default=400)
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--images-per-identity", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--train-images-per-s", type=float, default=None,
                        help="images/s the training step consumes, measured elsewhere (skips timing it here)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps (0: do not time)")
    args = parser.parse_args()

    faces = make_faces(args.identities, args.images_per_identity, args.stored_size, seed=0)
    settings = dict(backend=args.backend, batch_size=args.batch_size, image_size=args.image_size,
                    alexnet_size=args.alexnet_size, steps=args.steps, warmup=args.warmup,
                    prefetch=args.prefetch)
    results = {"in_memory": measure(FaceSource.from_arrays(faces, name="synthetic"), **settings)}
    with tempfile.TemporaryDirectory() as workdir:
        results["tfds_jpeg"] = measure(build_tfds_source(faces, workdir), **settings)
    train = None
    if args.train_images_per_s:
        train = {"images_per_s": args.train_images_per_s, "source": "--train-images-per-s"}
    elif args.train_steps:
        train = time_training_step(args.batch_size, args.train_steps)
    if train:
        for result in results.values():
            result["times_train_throughput"] = round(result["images_per_s"] / train["images_per_s"], 2)
    report = {"backend": args.backend, "batch_size": args.batch_size, "image_size": args.image_size,
              "alexnet_size": args.alexnet_size, "stored_size": args.stored_size,
              "num_images": int(len(faces["image"])), "cpu_count": os.cpu_count(),
              "images_per_step": 3 * args.batch_size, "results": results, "train_step": train}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
