"""Evaluation of a trained generator: `evaluate(config, workdir)` (task 'eval').

    python main.py --config=configs/eval.py --workdir=workdirs/demo

Reads the GAN run in WORKDIR (its config.json and a checkpoint; nothing of the run is
changed), ages every source face of the test split (faces of the run's source groups)
to every target group, exactly as `ipcgan_jax.inference.FaceAger` does for photos (each
pair on its own, BN mode as configured), and writes WORKDIR/eval/step_<N>/ (a fresh
folder each time: step_<N>_2, ... if it exists) with results.json, results.md and
samples.png. Metrics, per target group and overall:

- age: the independent age evaluator (`ipcgan_jax.age_evaluator.load_age_evaluator`,
  config `evaluator`, relative to WORKDIR) classifies each output: accuracy (output
  classified as its target group) and the mean estimated group. Beside each, the ceiling
  to read them against: the evaluator's accuracy and mean estimated group on the real
  test faces of that target group (`real_age_accuracy`, `real_mean_estimated_group`), so
  an output is as old as the evaluator can tell when its row matches the real faces'.
  Skipped with a message when no evaluator is exported.
- identity: dlib's face-recognition ResNet (`ipcgan_jax.identity`) compares each output
  with its input: verification rate (descriptor distance < 0.6, dlib's same-person
  threshold), mean distance and mean cosine similarity.
- FID between the outputs for a group and the real test faces of that group (and all
  outputs vs all test faces): pytorch-fid's InceptionV3 features when
  `fid_inception_weights` names its weights file, or any `fid_feature_extractor`
  (`ipcgan_jax.fid`); skipped with a message when neither is set.
- image artefacts (`ipcgan_jax.artefacts`): `grid_artefact_ratio`, the outputs' power at
  the frequencies of the 2- and 4-pixel patterns a transposed-conv upsampler draws, over
  that of their input faces (~1: no grid; a visible grid is far above 1), beside
  `real_grid_artefact_ratio`, the real test faces of the target group over the same
  inputs (what real faces of that age give); `colour_cast`, the mean chroma distance of
  each output from its input (0..255 scale; a tint moves it, brightness does not).
- synthetic data only (data.name 'synthetic'): the ground truth exists. Each output is
  compared with the same identity rendered at the target group, (a) with the source
  photo's own nuisance (pose, light, background, noise: the exact counterfactual image)
  and (b) canonical (nuisance_seed=None), both resized like the output: pixel MAE
  (0..255) and PSNR (dB). `copy_input_mae` is the error of returning the input unchanged,
  the baseline a generator must beat. `load_faces` keeps neither the identity attributes
  nor the nuisance seeds, so they are regenerated here from the run's data config with
  `synthetic.sample_identities` / `plan_dataset` and the same identity-disjoint split
  (deterministic; the first face is re-rendered and compared to catch any drift).
  `gt_colour_cast` is the colour cast of (a) from the input: the part of a chroma change
  that ageing itself makes. `residual_hf_ratio`: the high-frequency energy of output - (a)
  over that of (a) (`artefacts.high_frequency_energy`): texture drawn that the true aged
  face lacks, stripes or a grid of any period (0 for a perfect output), beside
  `copy_input_residual_hf_ratio`, the same of the input (the wrinkles it lacks). The
  ceilings of the age and identity metrics on exactly the evaluated pairs: the
  evaluator's accuracy and mean estimated group on (a) (`gt_age_accuracy`,
  `gt_mean_estimated_group`) and dlib's verification of (a) against the input
  (`gt_identity_verification_rate`): what a generator that aged each face perfectly
  would score.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from ipcgan_jax import age_evaluator, artefacts, checkpointing, fid, gan, identity, inference, preprocessing, visualization
from ipcgan_jax.configlib import ConfigError, validate_config
from ipcgan_jax.constants import EVALUATOR_IN_WORKDIR
from ipcgan_jax.data import sources, synthetic

EVAL_DIR = "eval"


def fid_weights_path(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The configured Inception weights file (relative to `workdir`, like `evaluator`), '' if
    none; ConfigError if it does not exist, so a long evaluation never fails at its end."""
    if not config.fid_inception_weights:
        return ""
    path = os.path.join(workdir, os.path.expanduser(config.fid_inception_weights))
    if not os.path.isfile(path):
        raise ConfigError(f"config key 'fid_inception_weights': no file at {path} (download pytorch-fid's "
                          f"{fid.INCEPTION_WEIGHTS_FILE} from {fid.INCEPTION_WEIGHTS_URL})")
    return path


def fresh_output_dir(workdir: str, step: int, weights: str = "average") -> str:
    """WORKDIR/eval/step_<N> (step_<N>_live for the live weights of a run that kept their
    average), or step_<N>_2, ... : never an existing folder."""
    base = os.path.join(workdir, EVAL_DIR, f"step_{step}" + ("_live" if weights == "live" else ""))
    out, suffix = base, 1
    while os.path.exists(out):
        suffix += 1
        out = f"{base}_{suffix}"
    os.makedirs(out)
    return out


def _data_config(run_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict(run_config.data.to_dict())
    for key, value in config.data.items():
        if value:
            data[key] = value
    return data


# ----------------------------------------------------------------------------- judges
class _AgeJudge:
    def __init__(self, path: str):
        module, variables, _ = age_evaluator.load_age_evaluator(path)
        self.num_groups = module.num_groups
        variables = jax.tree.map(jnp.asarray, variables)
        self._predict = jax.jit(lambda pixels: jnp.argmax(
            age_evaluator.predict_age_groups(module, variables, pixels), axis=-1))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        # Fixed-size chunks: one compilation for any number of images.
        chunk = 32
        out = []
        for start in range(0, len(pixels), chunk):
            part = pixels[start:start + chunk]
            padded = np.resize(part, (chunk,) + part.shape[1:])
            out.append(np.asarray(self._predict(padded))[:len(part)])
        return np.concatenate(out) if out else np.zeros((0,), np.int64)


class SyntheticTruth:
    """Ground-truth renders for the test faces of an in-memory synthetic run."""

    def __init__(self, data: ml_collections.ConfigDict, split: str, faces: Any, image_size: int):
        self.size, self.image_size = int(data.size), int(image_size)
        self.identities = synthetic.sample_identities(int(data.num_identities), int(data.seed))
        plan = synthetic.plan_dataset(int(data.num_identities), int(data.images_per_identity), seed=int(data.seed))
        train_rows, test_rows = sources.identity_disjoint_split(plan["identity"], float(data.test_fraction),
                                                                int(data.seed))
        rows = test_rows if split == "test" else train_rows
        self.nuisance_seed = plan["nuisance_seed"][rows]
        if not (np.array_equal(plan["identity"][rows], faces.identity)
                and np.array_equal(plan["age_group"][rows], faces.age_group)):
            raise ValueError("the regenerated synthetic plan does not match load_faces' split; "
                             "ipcgan_jax.data.synthetic or sources changed how the data is made")
        self.face_identity = faces.identity
        first = self.render(np.array([0]), np.array([faces.age_group[0]]), same_photo=True, resize=False)
        if not np.array_equal(first, faces.images([0])):
            raise ValueError("re-rendering the first synthetic test face does not reproduce it; "
                             "ipcgan_jax.data.synthetic changed how faces are drawn")

    def render(self, face_rows: np.ndarray, age_groups: np.ndarray, *, same_photo: bool,
               resize: bool = True) -> np.ndarray:
        seeds = self.nuisance_seed[face_rows] if same_photo else None
        images = synthetic.render_faces(self.identities.take(self.face_identity[face_rows]),
                                              np.asarray(age_groups), size=self.size, nuisance_seed=seeds)
        if not resize:
            return images
        resized = preprocessing.legacy_resize_bilinear(jnp.asarray(images, jnp.float32), self.image_size,
                                                       self.image_size)
        return np.asarray(jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8))


def pixel_errors(outputs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MAE (0..255) and PSNR (dB, capped at 100 for identical images)."""
    difference = outputs.astype(np.float64) - truth.astype(np.float64)
    axes = tuple(range(1, difference.ndim))
    mae = np.mean(np.abs(difference), axis=axes)
    mse = np.mean(difference ** 2, axis=axes)
    psnr = np.where(mse > 0, 10.0 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)
    return mae, psnr


# ----------------------------------------------------------------------------- evaluate
def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the GAN run in `workdir`; returns the results written to results.json."""
    validate_config(config)

    workdir = os.path.abspath(os.path.expanduser(workdir))
    messages: list[str] = []
    # FID set-up first: a wrong weights file or extractor fails before any work.
    inception_weights = fid_weights_path(config, workdir)
    extractor = None
    if inception_weights:
        extractor = fid.inception_extractor(inception_weights)
        messages.append(f"FID on pytorch-fid's InceptionV3 pool3 features, weights {inception_weights}")
    elif config.fid_feature_extractor:
        extractor = fid.load_feature_extractor(config.fid_feature_extractor)
        messages.append(f"FID on the features of fid_feature_extractor {config.fid_feature_extractor!r} "
                        "(comparable only with FIDs from the same extractor)")
    else:
        messages.append(f"FID skipped: set fid_inception_weights to pytorch-fid's {fid.INCEPTION_WEIGHTS_FILE} "
                        f"(download it from {fid.INCEPTION_WEIGHTS_URL}), or fid_feature_extractor to "
                        "'package.module:factory' (see ipcgan_jax.fid)")
    try:
        loaded = inference.load_generator(workdir, step=config.step or None, weights=config.generator_weights)
    except checkpointing.STEP_ERRORS as error:
        raise checkpointing.CheckpointError(f"{error}; evaluate a chosen checkpoint with --config.step=N") from None
    run_config = loaded.run_config
    if run_config is None:
        raise ConfigError(f"{workdir} is an exported generator, not a GAN run's workdir: evaluation needs the "
                         "run's config.json for its data (age exported generators with python -m ipcgan_jax.age)")
    ager = inference.FaceAger(loaded, bn_mode=config.bn_mode or None)
    data = _data_config(run_config, config)
    split = data.test_split
    faces = sources.load_faces(data, split)
    source_groups = tuple(run_config.data.source_groups)
    source_rows = faces.indices_of_groups(source_groups)
    if config.max_faces:
        source_rows = source_rows[:config.max_faces]
    if not len(source_rows):
        raise ConfigError(f"{faces.name}: no faces of the source groups {source_groups} to evaluate")
    groups = ager.resolve_groups(None)
    labels = ager.group_labels(groups)
    num_groups = len(groups)

    age_judge = None
    evaluator_path = os.path.join(workdir, os.path.expanduser(config.evaluator)) if config.evaluator else ""
    if not evaluator_path:
        messages.append("age metrics skipped: config field 'evaluator' is empty")
    elif not os.path.isdir(evaluator_path):
        how = ("train one with `python main.py --config=configs/age_evaluator.py --workdir=DIR`, then set "
               "--config.evaluator=DIR/export")
        if config.evaluator != EVALUATOR_IN_WORKDIR:  # a path the user gave: a typo must not drop the metric
            raise ConfigError(f"config key 'evaluator': no exported age evaluator at {evaluator_path}; {how}, "
                              "or set --config.evaluator='' to evaluate without the age metrics")
        messages.append(f"age metrics skipped: no exported age evaluator at {evaluator_path} ({how})")
    else:
        age_judge = _AgeJudge(evaluator_path)
        if age_judge.num_groups != num_groups:
            raise ConfigError(f"the age evaluator at {evaluator_path} has {age_judge.num_groups} groups, "
                             f"the generator {num_groups}")
    truth = None
    if data.name == "synthetic" and not data.get("packed_path"):
        truth = SyntheticTruth(data, split, faces, ager.image_size)
    elif data.name == "synthetic":  # a pack may hold a subset, or resized faces: no plan to regenerate
        messages.append(f"ground-truth errors skipped: the test faces come from a pack ({data.packed_path})")
    else:
        messages.append(f"ground-truth errors skipped: only the in-memory synthetic data has them "
                        f"(data.name is {data.name!r})")
    layout = loaded.alignment
    embedder = identity.FaceEmbedder(layout.padding, layout.vertical_shift)

    per_pair: dict[str, list[np.ndarray]] = {k: [] for k in (
        "estimated_group", "distance", "cosine", "gt_same_mae", "gt_same_psnr", "gt_canonical_mae",
        "gt_canonical_psnr", "copy_input_mae", "grid_power", "input_grid_power", "colour_cast",
        "gt_colour_cast", "gt_estimated_group", "gt_distance", "residual_hf_energy",
        "copy_input_residual_hf_energy", "gt_hf_energy")}
    output_features: list[np.ndarray] = []
    samples = []
    for start in tqdm(range(0, len(source_rows), config.batch_size), desc="evaluating", unit="batch"):
        rows = source_rows[start:start + config.batch_size]
        g_inputs = ager.to_generator_input(faces.images(rows))
        outputs = ager.age_generator_inputs(g_inputs, groups)  # (n, G, S, S, 3)
        input_pixels = inference.generator_input_pixels(g_inputs)
        flat = outputs.reshape((-1,) + outputs.shape[2:])
        pair_groups = np.tile(np.asarray(groups), len(rows))
        pair_inputs = np.repeat(input_pixels, num_groups, axis=0)
        per_pair["grid_power"].append(artefacts.grid_artefact_power(flat))
        per_pair["input_grid_power"].append(np.repeat(artefacts.grid_artefact_power(input_pixels), num_groups))
        per_pair["colour_cast"].append(artefacts.colour_cast(flat, pair_inputs))
        if age_judge is not None:
            per_pair["estimated_group"].append(age_judge(flat))
        input_codes = embedder.embed(input_pixels)
        output_codes = embedder.embed(flat).reshape(len(rows), num_groups, -1)
        per_pair["distance"].append(identity.descriptor_distance(input_codes[:, None], output_codes).reshape(-1))
        per_pair["cosine"].append(identity.cosine_similarity(input_codes[:, None], output_codes).reshape(-1))
        if extractor is not None:
            output_features.append(np.asarray(extractor(flat), np.float64))
        if truth is not None:
            face_rows = np.repeat(rows, num_groups)
            same = truth.render(face_rows, pair_groups, same_photo=True)
            canonical = truth.render(face_rows, pair_groups, same_photo=False)
            for name, reference in (("gt_same", same), ("gt_canonical", canonical)):
                mae, psnr = pixel_errors(flat, reference)
                per_pair[f"{name}_mae"].append(mae)
                per_pair[f"{name}_psnr"].append(psnr)
            per_pair["copy_input_mae"].append(pixel_errors(pair_inputs, same)[0])
            per_pair["gt_colour_cast"].append(artefacts.colour_cast(same, pair_inputs))
            same_values = same.astype(np.float64)
            per_pair["residual_hf_energy"].append(artefacts.high_frequency_energy(flat - same_values))
            per_pair["copy_input_residual_hf_energy"].append(
                artefacts.high_frequency_energy(pair_inputs - same_values))
            per_pair["gt_hf_energy"].append(artefacts.high_frequency_energy(same_values))
            if age_judge is not None:
                per_pair["gt_estimated_group"].append(age_judge(same))
            truth_codes = embedder.embed(same).reshape(len(rows), num_groups, -1)
            per_pair["gt_distance"].append(identity.descriptor_distance(input_codes[:, None], truth_codes).reshape(-1))
        for k in range(min(len(rows), config.num_sample_faces - len(samples))):
            reference_row = (truth.render(np.full(num_groups, rows[k]), np.asarray(groups), same_photo=True)
                             if truth is not None else None)
            samples.append((input_pixels[k], outputs[k], reference_row))
    per_pair = {k: np.concatenate(v) for k, v in per_pair.items() if v}
    pair_groups = np.tile(np.asarray(groups), len(source_rows))

    real_features_by_group = {}
    real_accuracy = None
    real_estimated = None
    # Every real test face at the generator's resolution: the reference of the age, FID
    # and grid-artefact metrics.
    real_predictions, real_features, real_grid_power = [], [], []
    for start in tqdm(range(0, len(faces), 64), desc="real test faces", unit="batch"):
        indices = np.arange(start, min(start + 64, len(faces)))
        pixels = np.asarray(jnp.clip(jnp.round(preprocessing.legacy_resize_bilinear(
            jnp.asarray(faces.images(indices), jnp.float32), ager.image_size, ager.image_size)), 0, 255
        ).astype(jnp.uint8))
        real_grid_power.append(artefacts.grid_artefact_power(pixels))
        if age_judge is not None:
            real_predictions.append(age_judge(pixels))
        if extractor is not None:
            real_features.append(np.asarray(extractor(pixels), np.float64))
    real_grid_power = np.concatenate(real_grid_power)
    if age_judge is not None:
        real_estimated = np.concatenate(real_predictions)
        real_accuracy = float(np.mean(real_estimated == faces.age_group))
    if extractor is not None:
        real_features = np.concatenate(real_features)
        real_features_by_group = {g: real_features[faces.age_group == g] for g in groups}
        real_features_by_group["all"] = real_features
    generated_features = np.concatenate(output_features) if output_features else None

    def summarise(selector: np.ndarray, group: int | None) -> dict:
        result: dict[str, Any] = {"num_outputs": int(selector.sum())}

        def age_scores(prefix: str, estimated: np.ndarray, wanted: np.ndarray | int) -> None:
            result[f"{prefix}age_accuracy"] = float(np.mean(estimated == wanted)) if len(estimated) else None
            result[f"{prefix}mean_estimated_group"] = float(np.mean(estimated)) if len(estimated) else None

        if "estimated_group" in per_pair:
            age_scores("", per_pair["estimated_group"][selector], pair_groups[selector])
            # The ceiling: what the evaluator says of real test faces of the target group.
            if group is None:
                age_scores("real_", real_estimated, faces.age_group)
            else:
                age_scores("real_", real_estimated[faces.age_group == group], group)
        if "gt_estimated_group" in per_pair:
            age_scores("gt_", per_pair["gt_estimated_group"][selector], pair_groups[selector])
        result["identity_verification_rate"] = float(np.mean(per_pair["distance"][selector] < config.identity_threshold))
        if "gt_distance" in per_pair:
            result["gt_identity_verification_rate"] = float(
                np.mean(per_pair["gt_distance"][selector] < config.identity_threshold))
        result["identity_mean_distance"] = float(np.mean(per_pair["distance"][selector]))
        result["identity_mean_cosine"] = float(np.mean(per_pair["cosine"][selector]))
        if generated_features is not None:
            real = real_features_by_group["all" if group is None else group]
            generated = generated_features[selector]
            result["fid"] = (fid.fid_from_features(generated, real) if len(real) >= 2 and len(generated) >= 2
                             else None)
        for key in ("gt_same_mae", "gt_same_psnr", "gt_canonical_mae", "gt_canonical_psnr", "copy_input_mae"):
            if key in per_pair:
                result[key] = float(np.mean(per_pair[key][selector]))
        # Every input appears once per target group: the same reference power in every row.
        input_power = per_pair["input_grid_power"][selector]
        result["grid_artefact_ratio"] = artefacts.power_ratio(per_pair["grid_power"][selector], input_power)
        real = real_grid_power if group is None else real_grid_power[faces.age_group == group]
        result["real_grid_artefact_ratio"] = artefacts.power_ratio(real, input_power)
        result["colour_cast"] = float(np.mean(per_pair["colour_cast"][selector]))
        if "gt_colour_cast" in per_pair:
            result["gt_colour_cast"] = float(np.mean(per_pair["gt_colour_cast"][selector]))
            truth_energy = per_pair["gt_hf_energy"][selector]
            result["residual_hf_ratio"] = artefacts.power_ratio(per_pair["residual_hf_energy"][selector],
                                                                truth_energy)
            result["copy_input_residual_hf_ratio"] = artefacts.power_ratio(
                per_pair["copy_input_residual_hf_energy"][selector], truth_energy)
        return result

    results = {
        "workdir": workdir, "step": loaded.step, "generator_weights": loaded.weights,
        "split": faces.name, "bn_mode": ager.bn_mode,
        "num_source_faces": int(len(source_rows)), "source_groups": list(source_groups),
        "evaluator": evaluator_path if age_judge is not None else None,
        "evaluator_accuracy_on_real_test_faces": real_accuracy,
        "identity_threshold": float(config.identity_threshold),
        "per_group": {label: summarise(pair_groups == g, g) for g, label in zip(groups, labels)},
        "overall": summarise(np.ones_like(pair_groups, bool), None),
        "messages": messages,
    }
    # The live weights get their own folder only where the run kept an average to tell them from.
    kept_average = bool(gan.generator_ema_decay(run_config))
    out_dir = fresh_output_dir(workdir, loaded.step, loaded.weights if kept_average else "average")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(results_markdown(results))
    if samples:
        visualization.save_png(os.path.join(out_dir, "samples.png"), sample_sheet(samples, labels))
    results["output_dir"] = out_dir
    print(results_markdown(results))
    print(f"results written to {out_dir}")
    return results


_COLUMNS = (("age_accuracy", "age acc.", "{:.3f}"), ("gt_age_accuracy", "true aged: age acc.", "{:.3f}"),
            ("real_age_accuracy", "real faces: age acc.", "{:.3f}"),
            ("mean_estimated_group", "mean est. group", "{:.2f}"),
            ("gt_mean_estimated_group", "true aged: mean est. group", "{:.2f}"),
            ("real_mean_estimated_group", "real faces: mean est. group", "{:.2f}"),
            ("identity_verification_rate", "verif. rate", "{:.3f}"),
            ("gt_identity_verification_rate", "true aged: verif. rate", "{:.3f}"),
            ("identity_mean_cosine", "cosine", "{:.3f}"),
            ("identity_mean_distance", "dlib dist.", "{:.3f}"), ("fid", "FID", "{:.2f}"),
            ("gt_same_mae", "GT MAE", "{:.2f}"), ("gt_same_psnr", "GT PSNR", "{:.2f}"),
            ("gt_canonical_mae", "canon. GT MAE", "{:.2f}"), ("copy_input_mae", "copy-input MAE", "{:.2f}"),
            ("grid_artefact_ratio", "grid ratio", "{:.2f}"),
            ("real_grid_artefact_ratio", "real faces: grid ratio", "{:.2f}"),
            ("colour_cast", "colour cast", "{:.2f}"), ("gt_colour_cast", "GT colour cast", "{:.2f}"),
            ("residual_hf_ratio", "residual HF", "{:.2f}"),
            ("copy_input_residual_hf_ratio", "copy-input residual HF", "{:.2f}"))


def results_markdown(results: dict) -> str:
    """The results as a Markdown table (rows: target groups and overall)."""
    present = [c for c in _COLUMNS if c[0] in results["overall"]]
    lines = [f"Evaluation of {results['workdir']} at step {results['step']} ({results['generator_weights']} "
             f"weights of G) on {results['split']}: "
             f"{results['num_source_faces']} source faces x {len(results['per_group'])} target groups, "
             f"BN mode {results['bn_mode']}.", ""]
    if results["evaluator_accuracy_on_real_test_faces"] is not None:
        lines += [f"Age evaluator accuracy on the real test faces: "
                  f"{results['evaluator_accuracy_on_real_test_faces']:.3f}.", ""]
    lines.append("| target group | " + " | ".join(c[1] for c in present) + " |")
    lines.append("|---|" + "---|" * len(present))
    for name, row in list(results["per_group"].items()) + [("overall", results["overall"])]:
        cells = ["n/a" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {m}" for m in results["messages"]]
    return "\n".join(lines) + "\n"


def sample_sheet(samples: list, labels: list[str]) -> np.ndarray:
    """Rows: each sample's input then its outputs; on the synthetic data, a second row
    with the ground truth at each group (the input's photo, aged by the renderer)."""
    rows = []
    for input_pixels, outputs, reference in samples:
        rows.append([input_pixels] + list(outputs))
        if reference is not None:
            rows.append([np.zeros_like(input_pixels)] + list(reference))
    return visualization.make_grid(rows, column_titles=["input"] + labels)
