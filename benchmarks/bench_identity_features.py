"""Which frozen AlexNet trunk gives the identity loss something to hold on real faces; JSON.

  python benchmarks/bench_identity_features.py [--data_dir workdirs/tfds] [--json FILE]

UTKFace has no identity labels, so no trunk can learn its identities. Candidates, all at
the demo's sizes (configs/alexnet_identity.py:demo: 64 px faces seen by AlexNet at 115
px, conv widths 32, 64, 96, 96, 64), trained here with `models.AlexNet` and optax:

  random      the untrained trunk (its initialisation);
  multitask   trunk + heads for UTKFace's age group, gender and race, on the train split;
  gender_race the same without the age head (does learning age cost the loss anything?);
  simclr      instance discrimination (SimCLR's NT-Xent over two augmented views of
              each face) on the train split's images, no labels;
  synthetic   the demo's own trunk: configs/alexnet_identity.py:demo (synthetic
              identities with the auxiliary age term) run by the project's trainer.

Every trunk starts from the project's AlexNet initialisation (conv1 scaled for inputs
in 0..255, `classifiers.tasks`); the trunks trained here use Adam with cosine decay.

Each is judged on held-out faces (the test split of the built UTKFace dataset, which no
candidate trains on), per layer conv1..conv5, with the squared distance between the
activation maps (what the GAN's identity loss sums):

  same_face_auc   ROC AUC of "a face vs itself under a mild augmentation (shift, scale,
                  brightness, flip)" against "a face vs another face, augmented alike";
  dlib_spearman   rank correlation with dlib's face-descriptor distance on random pairs
                  of different faces (dlib only judges here; it trains nothing);
  age_spearman    rank correlation with the pairs' age difference: a trunk whose
                  distance grows with age fights the ageing it should let through.

Rows `pixels` (the 64 px faces themselves) and `dlib` (its descriptors) frame the scale.
The dataset must be built first (docs/real_faces.md):
  python -m ipcgan_jax.data.build image_folder --config=utkface \\
      --manual_dir=/data/utkface_dev,/data/utkface_more --data_dir=workdirs/tfds
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import alexnet_identity  # noqa: E402
from ipcgan_jax import checkpointing, identity, preprocessing, tasks  # noqa: E402
from ipcgan_jax.classifiers.tasks import identity_task  # noqa: E402
from ipcgan_jax.constants import ALEXNET_TRUNK_LAYERS, NUM_AGE_GROUPS  # noqa: E402
from ipcgan_jax.data import build, face_templates  # noqa: E402
from ipcgan_jax.data.alignment import warp_affine  # noqa: E402
from ipcgan_jax.models import AlexNet  # noqa: E402
from json_report import print_report  # noqa: E402

NUM_GENDERS, NUM_RACES = 2, 5  # UTKFace's labels.csv: gender 0/1, race 0..4
PyTree = Any


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random similarity warp about the centre, flip, brightness/contrast, grayscale.

    scale and shift are the largest relative change (of the side); brightness and
    contrast the largest factor change; flip and grayscale probabilities."""

    scale: float
    shift: float
    brightness: float
    contrast: float
    flip: float
    grayscale: float


# "The same face" for the judge: what a generator that keeps the person might change.
MILD = Augmentation(scale=0.05, shift=0.04, brightness=0.15, contrast=0.0, flip=0.5, grayscale=0.0)
# SimCLR's views: strong enough that matching them needs more than colour and position.
STRONG = Augmentation(scale=0.2, shift=0.1, brightness=0.4, contrast=0.4, flip=0.5, grayscale=0.2)


def augment(images: np.ndarray, rng: np.random.Generator, how: Augmentation) -> np.ndarray:
    """uint8 (N, S, S, 3) -> uint8, each image drawn independently."""
    size = images.shape[1]
    centre = (size - 1) / 2.0
    out = np.empty_like(images)
    for i, image in enumerate(images):
        scale = 1.0 + rng.uniform(-how.scale, how.scale)
        flip = -1.0 if rng.random() < how.flip else 1.0
        shift = rng.uniform(-how.shift, how.shift, size=2) * size
        transform = np.array([[scale * flip, 0.0, centre - scale * flip * centre + shift[0]],
                              [0.0, scale, centre - scale * centre + shift[1]]])
        warped = warp_affine(image, transform, (size, size)).astype(np.float32)
        warped *= 1.0 + rng.uniform(-how.brightness, how.brightness)
        mean = warped.mean()
        warped = (warped - mean) * (1.0 + rng.uniform(-how.contrast, how.contrast)) + mean
        if rng.random() < how.grayscale:
            warped[:] = (warped @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
        out[i] = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- data
def read_labels(folders: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """labels.csv rows by the dataset's file name (`<folder name>/<file>`)."""
    rows = {}
    for folder in folders:
        with open(os.path.join(folder, "labels.csv"), newline="") as handle:
            for row in csv.DictReader(handle):
                rows[f"{os.path.basename(folder)}/{row['file']}"] = row
    return rows


def load_split(data_dir: str, split: str, labels: dict[str, dict[str, str]], image_size: int,
               limit: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """A split of the built 'utkface' dataset: chips (200 px), faces at `image_size` (TF1
    resize, as the pipeline), age, age_group, gender, race; `limit` seeded faces, 0: all."""
    records = build.make_builder("image_folder", data_dir=data_dir, config="utkface").as_data_source(split)
    order = np.arange(len(records))
    if limit:
        order = np.sort(np.random.default_rng(seed).permutation(len(records))[:limit])
    chips, fields = [], {k: [] for k in ("age", "age_group", "gender", "race")}
    for start in range(0, len(order), 512):
        for example in records.__getitems__([int(i) for i in order[start:start + 512]]):
            name = example["file_name"]
            row = labels[name.decode() if isinstance(name, bytes) else str(name)]
            chips.append(example["image"])
            fields["age"].append(int(example["age"]))
            fields["age_group"].append(int(example["age_group"]))
            fields["gender"].append(int(row["gender"]))
            fields["race"].append(int(row["race"]))
    chips = np.stack(chips)
    return {"chips": chips, "faces": resize_to(chips, image_size),
            **{k: np.asarray(v, np.int32) for k, v in fields.items()}}


def resize_to(images: np.ndarray, size: int) -> np.ndarray:
    resize = jax.jit(lambda x: preprocessing.legacy_resize_bilinear(x.astype(jnp.float32), size, size))
    return np.concatenate([np.clip(np.rint(np.asarray(resize(images[i:i + 256]))), 0, 255).astype(np.uint8)
                           for i in range(0, len(images), 256)])


# ----------------------------------------------------------------------------- networks
class TrunkWithHeads(nn.Module):
    """The AlexNet trunk (`trunk`: conv1..conv5) with one hidden layer and linear heads on pool5."""

    alexnet: dict
    heads: tuple[tuple[str, int], ...]
    hidden: int = 256

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        pool5 = AlexNet(**self.alexnet, name="trunk")(images, outputs=("pool5",))["pool5"]
        hidden = nn.relu(nn.Dense(self.hidden, name="hidden")(pool5.reshape(pool5.shape[0], -1)))
        return {name: nn.Dense(classes, name=name)(hidden) for name, classes in self.heads}


def trunk_of(params: PyTree) -> PyTree:
    return {name: params[name] for name in ALEXNET_TRUNK_LAYERS}


def initial_trunk(demo, seed: int) -> PyTree:
    """The trunk as the project's classifier runs initialise it (conv1 scaled for inputs in 0..255)."""
    num_identities = demo.model.alexnet.num_identities
    task = identity_task(demo, np.arange(num_identities), tuple(str(i) for i in range(num_identities)))
    return trunk_of(task.init_variables(jax.random.key(seed))["params"])


def init_with_trunk(model: TrunkWithHeads, trunk: PyTree, alexnet_size: int, seed: int) -> PyTree:
    params = dict(model.init(jax.random.key(seed), jnp.zeros((1, alexnet_size, alexnet_size, 3)))["params"])
    params["trunk"] = trunk
    return params


def train(loss_fn: Callable, params: PyTree, batches: Iterator, steps: int, learning_rate: float,
          max_seconds: float) -> tuple[PyTree, dict[str, Any]]:
    """Adam with cosine decay over `steps`; stops early past `max_seconds` (reported)."""
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    start = time.perf_counter()
    history = []
    done = 0
    for done in range(1, steps + 1):
        params, opt_state, metrics = step(params, opt_state, next(batches))
        history.append(metrics)
        if done == 1:
            jax.block_until_ready(params)
            compiled = time.perf_counter()
        if time.perf_counter() - start > max_seconds:
            break
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    last = {k: round(float(np.mean([float(m[k]) for m in history[-50:]])), 4) for k in history[-1]}
    return params, {"steps": done, "planned_steps": steps, "stopped_by_time": done < steps,
                    "train_s": round(seconds, 1),
                    "steps_per_s": round((done - 1) / max(seconds - (compiled - start), 1e-9), 2),
                    "last_50_steps": last}


def batch_stream(num_images: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Indices of shuffled epochs, seeded."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(num_images)
        for start in range(0, num_images - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()


def train_multitask(train_set, trunk, alexnet, alexnet_size, args, with_age: bool) -> tuple[PyTree, dict]:
    heads = (("age_group", NUM_AGE_GROUPS),) if with_age else ()
    model = TrunkWithHeads(alexnet, heads + (("gender", NUM_GENDERS), ("race", NUM_RACES)))
    params = init_with_trunk(model, trunk, alexnet_size, args.seed)

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, preprocessing.pixels_to_alexnet_input(batch["faces"], alexnet_size))
        terms = {name: cross_entropy(logits[name], batch[name]) for name in logits}
        return sum(loss for loss, _ in terms.values()), {f"{k}_accuracy": acc for k, (_, acc) in terms.items()}

    rng = np.random.default_rng(args.seed + 1)
    batches = ({"faces": augment(train_set["faces"][idx], rng, dataclasses.replace(MILD, brightness=0.0)),
                **{k: train_set[k][idx] for k in ("age_group", "gender", "race")}}
               for idx in batch_stream(len(train_set["faces"]), args.batch_size, args.seed))
    params, report = train(loss_fn, params, batches, args.multitask_steps, args.learning_rate, args.max_train_s)
    return (model, params), report


def train_simclr(train_set, trunk, alexnet, alexnet_size, args) -> tuple[PyTree, dict]:
    model = TrunkWithHeads(alexnet, (("projection", args.projection_features),))
    params = init_with_trunk(model, trunk, alexnet_size, args.seed)

    def loss_fn(params, views):  # views: (2B, S, S, 3), view k of face i at rows i and B + i
        projected = model.apply({"params": params}, preprocessing.pixels_to_alexnet_input(views, alexnet_size))
        z = projected["projection"] / jnp.linalg.norm(projected["projection"], axis=-1, keepdims=True)
        similarity = z @ z.T / args.temperature
        n = z.shape[0] // 2
        similarity = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, similarity)
        partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
        return cross_entropy(similarity, partner)[0], {
            "instance_accuracy": (similarity.argmax(-1) == partner).mean()}

    rng = np.random.default_rng(args.seed + 2)
    batches = (np.concatenate([augment(train_set["faces"][idx], rng, STRONG),
                               augment(train_set["faces"][idx], rng, STRONG)])
               for idx in batch_stream(len(train_set["faces"]), args.simclr_batch_size, args.seed))
    params, report = train(loss_fn, params, batches, args.simclr_steps, args.learning_rate, args.max_train_s)
    return (model, params), report


def train_synthetic(demo, workdir: str) -> tuple[PyTree, dict]:
    """The demo's own trunk: `configs/alexnet_identity.py:demo` run by the project's task
    router into `workdir` (reused once exported), read back from its export."""
    start = time.perf_counter()
    export = os.path.join(workdir, "export")
    trained_here = not os.path.isdir(export)
    if trained_here:
        tasks.train_and_evaluate(demo, workdir)
    seconds = time.perf_counter() - start
    variables, metadata = checkpointing.load_variables(export)
    report = {"workdir": workdir, "steps": demo.num_steps, "batch_size": demo.batch_size,
              "held_out_identity_accuracy": metadata.get("test_accuracy")}
    if trained_here:  # set-up, evaluation and export included
        report.update(run_s=round(seconds, 1), steps_per_s_with_overheads=round(demo.num_steps / seconds, 2))
    return variables["params"], report


# ----------------------------------------------------------------------------- judging
@dataclasses.dataclass(frozen=True)
class Pairs:
    """Judging set: faces, their augmented copies, and the pairs compared."""

    originals: np.ndarray   # (N, S, S, 3) faces at the GAN's size
    augmented: np.ndarray   # (N, S, S, 3) the same faces, mildly augmented
    other: np.ndarray       # (N,) index of the different face each face is compared with
    random_pairs: np.ndarray  # (M, 2) pairs of different faces for the rank correlations
    age_gap: np.ndarray     # (M,) their absolute age difference


def make_pairs(test_set, num_random_pairs: int, seed: int, image_size: int) -> tuple[Pairs, np.ndarray]:
    rng = np.random.default_rng(seed)
    augmented_chips = augment(test_set["chips"], rng, MILD)  # at chip size, so that dlib sees the same
    n = len(test_set["chips"])
    other = (np.arange(n) + rng.integers(1, n, size=n)) % n
    first = rng.integers(0, n, size=num_random_pairs)
    second = (first + rng.integers(1, n, size=num_random_pairs)) % n
    random_pairs = np.stack([first, second], axis=1)
    age_gap = np.abs(test_set["age"][first] - test_set["age"][second])
    pairs = Pairs(test_set["faces"], resize_to(augmented_chips, image_size), other, random_pairs, age_gap)
    return pairs, augmented_chips


def judge(features: Callable[[np.ndarray], np.ndarray], pairs: Pairs, dlib_distance: np.ndarray) -> dict:
    """same_face_auc, dlib_spearman and age_spearman of squared feature distances."""
    original = features(pairs.originals)
    augmented = features(pairs.augmented)
    same = ((original - augmented) ** 2).sum(axis=1)
    different = ((original - augmented[pairs.other]) ** 2).sum(axis=1)
    first, second = pairs.random_pairs.T
    random_distance = ((original[first] - original[second]) ** 2).sum(axis=1)
    auc = scipy.stats.mannwhitneyu(different, same).statistic / (len(same) * len(different))
    return {"same_face_auc": round(float(auc), 4),
            "dlib_spearman": round(float(scipy.stats.spearmanr(random_distance, dlib_distance).statistic), 4),
            "age_spearman": round(float(scipy.stats.spearmanr(random_distance, pairs.age_gap).statistic), 4)}


def trunk_features(trunk: PyTree, alexnet: dict, alexnet_size: int, layer: str) -> Callable:
    model = AlexNet(**alexnet)
    run = jax.jit(lambda x: model.apply({"params": trunk}, preprocessing.pixels_to_alexnet_input(x, alexnet_size),
                                        outputs=(layer,))[layer])
    return lambda images: np.concatenate([np.asarray(run(images[i:i + 128].astype(np.float32)),
                                                     np.float64).reshape(len(images[i:i + 128]), -1)
                                          for i in range(0, len(images), 128)])


def judge_trunk(trunk: PyTree, alexnet: dict, alexnet_size: int, pairs: Pairs, dlib_distance: np.ndarray) -> dict:
    return {layer: judge(trunk_features(trunk, alexnet, alexnet_size, layer), pairs, dlib_distance)
            for layer in ALEXNET_TRUNK_LAYERS}


def dlib_judge(chips: np.ndarray, augmented_chips: np.ndarray, pairs: Pairs) -> tuple[dict, np.ndarray]:
    """dlib's own scores on the same pairs, and its distances on the random pairs."""
    template = face_templates.get_template("utkface")
    embedder = identity.FaceEmbedder(template.padding, template.vertical_shift)
    original, augmented = embedder.embed(chips), embedder.embed(augmented_chips)
    same = identity.descriptor_distance(original, augmented)
    different = identity.descriptor_distance(original, augmented[pairs.other])
    first, second = pairs.random_pairs.T
    random_distance = identity.descriptor_distance(original[first], original[second])
    auc = scipy.stats.mannwhitneyu(different, same).statistic / (len(same) * len(different))
    return {"same_face_auc": round(float(auc), 4),
            "same_verified": round(float((same < identity.VERIFICATION_THRESHOLD).mean()), 4),
            "different_verified": round(float((different < identity.VERIFICATION_THRESHOLD).mean()), 4),
            "age_spearman": round(float(scipy.stats.spearmanr(random_distance, pairs.age_gap).statistic), 4),
            }, random_distance


def head_accuracy(model_and_params, test_set, alexnet_size) -> dict:
    model, params = model_and_params
    logits = model.apply({"params": params}, preprocessing.pixels_to_alexnet_input(
        test_set["faces"].astype(np.float32), alexnet_size))
    return {name: round(float((np.asarray(value).argmax(-1) == test_set[name]).mean()), 4)
            for name, value in logits.items() if name in test_set}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="workdirs/tfds", help="where the 'utkface' dataset was built")
    parser.add_argument("--labels", nargs="+", required=True,
                        help="the UTKFace folders (labels.csv + images/) the dataset was built from")
    parser.add_argument("--judge_faces", type=int, default=600, help="held-out test faces judged")
    parser.add_argument("--random_pairs", type=int, default=3000)
    parser.add_argument("--multitask_steps", type=int, default=500)
    parser.add_argument("--simclr_steps", type=int, default=170)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--simclr_batch_size", type=int, default=48)
    parser.add_argument("--projection_features", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_train_s", type=float, default=480.0, help="per candidate (the machine is shared)")
    parser.add_argument("--candidates", nargs="+",
                        default=["random", "multitask", "gender_race", "simclr", "synthetic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic_workdir", default="/tmp/bench_identity_features/alexnet_identity",
                        help="where the demo's trunk is trained (or read, once exported)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()

    demo = alexnet_identity.get_config("demo")
    image_size, alexnet_size = demo.data.image_size, demo.data.alexnet_size
    alexnet = dict(demo.model.alexnet)
    labels = read_labels(tuple(args.labels))
    start = time.perf_counter()
    train_set = load_split(args.data_dir, "train", labels, image_size)
    test_set = load_split(args.data_dir, "test", labels, image_size, limit=args.judge_faces, seed=args.seed)
    pairs, augmented_chips = make_pairs(test_set, args.random_pairs, args.seed, image_size)
    results: dict[str, Any] = {
        "data": {"train_faces": len(train_set["faces"]), "judged_test_faces": len(test_set["faces"]),
                 "random_pairs": args.random_pairs, "image_size": image_size, "alexnet_size": alexnet_size,
                 "conv_features": list(alexnet["conv_features"]), "load_s": round(time.perf_counter() - start, 1)},
        "augmentation_same_face": dataclasses.asdict(MILD),
    }
    results["dlib"], dlib_distance = dlib_judge(test_set["chips"], augmented_chips, pairs)
    pixels = judge(lambda x: x.reshape(len(x), -1).astype(np.float64), pairs, dlib_distance)
    results["pixels"] = pixels
    results["candidates"] = {}
    for name in args.candidates:
        entry: dict[str, Any] = {}
        start_trunk = initial_trunk(demo, args.seed)
        if name == "random":
            trunk = start_trunk
        elif name in ("multitask", "gender_race"):
            (model, params), entry["training"] = train_multitask(train_set, start_trunk, alexnet, alexnet_size,
                                                                 args, with_age=name == "multitask")
            entry["held_out_accuracy"] = head_accuracy((model, params), test_set, alexnet_size)
            trunk = params["trunk"]
        elif name == "simclr":
            (model, params), entry["training"] = train_simclr(train_set, start_trunk, alexnet, alexnet_size, args)
            trunk = params["trunk"]
        elif name == "synthetic":
            params, entry["training"] = train_synthetic(demo, args.synthetic_workdir)
            trunk = trunk_of(params)
        else:
            raise ValueError(f"unknown candidate {name!r}")
        entry["layers"] = judge_trunk(trunk, alexnet, alexnet_size, pairs, dlib_distance)
        results["candidates"][name] = entry
        print(json.dumps({name: entry}), file=sys.stderr, flush=True)
    print_report(results, args.json, indent=2)


if __name__ == "__main__":
    main()
