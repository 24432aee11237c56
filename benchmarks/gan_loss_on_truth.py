"""Why a synthetic-data GAN run ages as it does: G's own loss on its outputs against the
true aged faces, and its age classifier against the independent evaluator; prints JSON.

    python benchmarks/gan_loss_on_truth.py --workdir workdirs/demo [--faces 64]

For the first `--faces` test faces of the source groups and every target group, with the
run's latest checkpoint (G and D), its frozen AlexNet (identity trunk + age head) and its
loss weights:
- the generator's loss terms (adversarial against the run's D, age cross-entropy of the
  frozen age head, identity feature distance to the source, and for runs with the pixel
  variant the L1 distance to the source) and their weighted sum, on three images: G's
  output, the true aged face (the synthetic renderer's same photo at the target group)
  and the input unchanged. When the true aged face scores higher than the
  output, the objective itself prefers the output (a loss-weight problem); when lower, G
  has not found it (an optimisation problem);
- the age head's and the independent evaluator's accuracy and mean group on the outputs:
  a head far above the evaluator is being fooled (G draws what the head, not ageing, needs).
D runs in training mode on each batch of 64, as in the G update.

`discriminator_on_real` asks whether D knows age at all: its mean score on real test faces
of each group (rows) under each condition (columns), the faces of all groups mixed in
batches of the run's batch size as in the D update (one condition offset per pass, so
every batch holds several conditions; with a single one, D's BN would subtract it).
A high score off the diagonal is a wrong age D lets pass.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

from ipcgan_jax import age_evaluator, checkpointing, evaluation, gan, inference, losses, preprocessing
from ipcgan_jax.constants import FIELDS_ADDED_LATER
from ipcgan_jax.data import sources
from ipcgan_jax.models import Discriminator
from ipcgan_jax.runlib import frozen


def loss_terms(workdir: str, num_faces: int) -> dict:
    loaded = inference.load_generator(workdir)
    config = loaded.run_config
    if config.data.name != "synthetic":
        raise SystemExit(f"{workdir}: needs a run on the synthetic faces (their true aged faces exist)")
    ager = inference.FaceAger(loaded)
    faces = sources.load_faces(config.data, config.data.test_split)
    rows = faces.indices_of_groups(tuple(config.data.source_groups))[:num_faces]
    source = faces.images(rows)
    outputs = ager.age_aligned(source)
    truth = evaluation.SyntheticTruth(config.data, config.data.test_split, faces, ager.image_size)
    state, _, step = checkpointing.restore_state_tree(os.path.join(workdir, "checkpoints"), loaded.step)
    discriminator, alexnet = gan.build_discriminator(config), gan.build_alexnet(config)
    alexnet_params = frozen.load_frozen_alexnet(config, workdir)
    evaluator, evaluator_variables, _ = age_evaluator.load_age_evaluator(os.path.join(workdir, "age_evaluator", "export"))
    size, alexnet_size, weights = config.data.image_size, config.data.alexnet_size, config.loss
    layer = weights.feature_layer or None
    pixel_weight = weights.get("pixel_weight", FIELDS_ADDED_LATER["loss.pixel_weight"])
    source_pixels = preprocessing.legacy_resize_bilinear(jnp.asarray(source, jnp.float32), size, size)
    source_images = source_pixels / 127.5 - 1.0  # G's output range
    wanted = ("age_logits", layer) if layer else ("age_logits",)
    source_features = alexnet.apply({"params": alexnet_params},
                                    preprocessing.pixels_to_alexnet_input(source_pixels, alexnet_size),
                                    outputs=(layer,))[layer] if layer else None
    report = {"workdir": workdir, "step": step, "faces": len(rows), "weights": weights.to_dict(), "groups": []}
    for group in range(outputs.shape[1]):
        target = jnp.full((len(rows),), group, jnp.int32)
        candidates = {"output": jnp.asarray(outputs[:, group], jnp.float32),
                      "truth": jnp.asarray(truth.render(rows, np.full(len(rows), group), same_photo=True), jnp.float32),
                      "input": source_pixels}
        row = {"group": group}
        for name, pixels in candidates.items():
            images = pixels / 127.5 - 1.0
            scores, _ = discriminator.apply({"params": state["d_params"], "batch_stats": state["d_batch_stats"]},
                                            images, target, train=True, mutable=["batch_stats"])
            act = alexnet.apply({"params": alexnet_params},
                                preprocessing.generator_output_to_alexnet_input(images, alexnet_size), outputs=wanted)
            terms = {"adversarial": float(losses.generator_adversarial_loss(d_fake=scores)),
                     "age": float(losses.age_classification_loss(logits=act["age_logits"], age_group=target))}
            if layer:
                terms["feature"] = float(losses.identity_feature_loss(generated_features=act[layer],
                                                                      source_features=source_features))
            if pixel_weight:
                terms["pixel"] = float(losses.pixel_loss(generated=images, source=source_images))
            weighted = (weights.gan_weight * terms["adversarial"] + weights.age_weight * terms["age"]
                        + (weights.feature_weight * terms["feature"] if layer else 0.0)
                        + (pixel_weight * terms["pixel"] if pixel_weight else 0.0))
            row[name] = {**{k: round(v, 4) for k, v in terms.items()}, "weighted_total": round(weighted, 2)}
            if name == "output":
                head = np.argmax(np.asarray(act["age_logits"]), -1)
                judged = np.argmax(np.asarray(age_evaluator.predict_age_groups(evaluator, evaluator_variables, pixels)), -1)
                row["age_head_on_outputs"] = {"accuracy": float(np.mean(head == group)), "mean_group": float(head.mean())}
                row["evaluator_on_outputs"] = {"accuracy": float(np.mean(judged == group)),
                                               "mean_group": float(judged.mean())}
        report["groups"].append(row)
    report["discriminator_on_real"] = discriminator_on_real(
        faces, discriminator, {"params": state["d_params"], "batch_stats": state["d_batch_stats"]},
        num_faces, size, config.batch_size)
    return report


def discriminator_on_real(faces: sources.FaceSource, discriminator: Discriminator, variables: dict,
                          num_faces: int, size: int, batch_size: int) -> dict:
    """D's mean score on up to `num_faces` real faces per group, by (true group, condition)."""
    num_groups = discriminator.num_groups
    rows = np.concatenate([faces.indices_of_group(g)[:num_faces] for g in range(num_groups)])
    groups = faces.age_group[rows]
    images = preprocessing.pixels_to_discriminator_input(jnp.asarray(faces.images(rows), jnp.float32), size)
    order = np.random.default_rng(0).permutation(len(rows))  # mixes the groups within a batch
    scores = np.zeros((num_groups, num_groups))
    for offset in range(num_groups):
        condition = (groups + offset) % num_groups
        per_face = np.empty(len(rows))
        for start in range(0, len(rows), batch_size):
            batch = order[start:start + batch_size]
            out, _ = discriminator.apply(variables, images[batch], jnp.asarray(condition[batch], jnp.int32),
                                         train=True, mutable=["batch_stats"])
            per_face[batch] = np.asarray(jnp.mean(out, axis=(1, 2, 3)))
        for group in range(num_groups):
            scores[group, (group + offset) % num_groups] = per_face[groups == group].mean()
    return {"faces_per_group": [int(np.sum(groups == g)) for g in range(num_groups)],
            "rows_true_group_columns_condition": np.round(scores, 3).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--faces", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(loss_terms(os.path.abspath(args.workdir), args.faces)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
