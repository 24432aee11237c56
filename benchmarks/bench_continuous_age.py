"""Does the independent evaluator's estimated age rise with the requested age? Printed as JSON.

  python benchmarks/bench_continuous_age.py --data workdirs/tfds \
      --evaluator workdirs/utkface_cpu/age_evaluator/export \
      [--checkpoint DIR] [--faces 200] [--ages 15 17.5 ... 65] \
      [--plot docs/continuous_age.png] [--strip docs/continuous_age_strip.png] [--json FILE]

Held-out faces: `--faces` faces of the test split of the generator's own dataset (its run
config's data, read from the TFDS folder `--data`), drawn with `--seed` among the run's
source groups (11-30 for configs/utkface.py), exactly the faces `configs/eval.py` ages.
Each is aged to every requested age (`FaceAger.age_generator_inputs_to_ages`: condition
maps blended between the two nearest group centres, `continuous_age.age_condition`), and the
independent age evaluator (an 'age_evaluator' run's export, never seen by the GAN)
classifies every output. It predicts one of the five groups, so the estimated age of an
image is the expectation of the group centres (15.5 ... 55.5) under its softmax; the
estimated group (0 ... 4, the same expectation over group indices) is reported too.

For reading the numbers, the same evaluator on the real test faces (all of them), binned
by their true age: what it says of real faces that old, its ceiling. The report lists,
per requested age, the mean (and standard error) of the estimated age over the faces,
and says plainly where the mean falls from one requested age to the next and how often a
single face's estimate falls. `--plot` draws both curves (PIL, no matplotlib needed);
`--strip` writes the ageing progression of the first few faces (rows) as a frame sheet.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.json_report import print_report  # noqa: E402
from ipcgan_jax import age_evaluator, continuous_age, inference, preprocessing, visualization  # noqa: E402
from ipcgan_jax.constants import AGE_GROUP_CENTRES, NUM_AGE_GROUPS  # noqa: E402
from ipcgan_jax.data import sources  # noqa: E402

DEFAULT_AGES = tuple(float(a) for a in np.arange(15.0, 65.01, 2.5))
# Changes of an estimate smaller than this (years) are float noise, not a fall: ages past
# the last centre give identical images, scored in different evaluator batches.
FLAT_YEARS = 1e-3
_CHUNK = 64


class EstimatedAge:
    """The evaluator as (estimated age, estimated group) per image, in fixed-size chunks."""

    def __init__(self, path: str):
        module, variables, _ = age_evaluator.load_age_evaluator(path)
        if module.num_groups != NUM_AGE_GROUPS:
            raise ValueError(f"{path}: the evaluator has {module.num_groups} groups, expected {NUM_AGE_GROUPS}")
        variables = jax.tree.map(jnp.asarray, variables)
        self._probabilities = jax.jit(lambda pixels: jax.nn.softmax(
            age_evaluator.predict_age_groups(module, variables, pixels), axis=-1))

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for start in range(0, len(pixels), _CHUNK):
            part = pixels[start:start + _CHUNK]
            padded = np.resize(part, (_CHUNK,) + part.shape[1:])
            parts.append(np.asarray(self._probabilities(padded), np.float64)[:len(part)])
        probabilities = np.concatenate(parts)
        return probabilities @ np.asarray(AGE_GROUP_CENTRES), probabilities @ np.arange(NUM_AGE_GROUPS)


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (average ranks for ties); nan when y is constant."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def draw_plot(path: str, ages: np.ndarray, means: np.ndarray, errors: np.ndarray,
              real: list[dict], title: str) -> None:
    """A line chart with PIL: requested vs estimated age, error bars, real-face reference."""
    width, height, left, right, top, bottom = 760, 500, 70, 20, 40, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x_range = (min(ages.min(), 10.0), max(ages.max(), 70.0))
    y_range = (10.0, 60.0)

    def to_xy(x, y):
        px = left + (x - x_range[0]) / (x_range[1] - x_range[0]) * (width - left - right)
        py = height - bottom - (y - y_range[0]) / (y_range[1] - y_range[0]) * (height - top - bottom)
        return px, py

    for tick in range(10, 71, 10):  # grid and ticks
        x, _ = to_xy(tick, y_range[0])
        draw.line([(x, top), (x, height - bottom)], fill=(230, 230, 230))
        draw.text((x - 6, height - bottom + 6), str(tick), fill="black", font=font)
    for tick in range(10, 61, 10):
        _, y = to_xy(x_range[0], tick)
        draw.line([(left, y), (width - right, y)], fill=(230, 230, 230))
        draw.text((left - 24, y - 6), str(tick), fill="black", font=font)
    draw.rectangle([(left, top), (width - right, height - bottom)], outline="black")
    for centre in AGE_GROUP_CENTRES:  # where a requested age is exactly one group
        x, _ = to_xy(centre, y_range[0])
        draw.line([(x, height - bottom - 8), (x, height - bottom)], fill=(120, 120, 120), width=2)
    line = [to_xy(a, a) for a in (x_range[0], x_range[1])]
    draw.line(line, fill=(170, 170, 170))
    real_points = [to_xy(r["mean_true_age"], r["mean_estimated_age"]) for r in real]
    if len(real_points) > 1:
        draw.line(real_points, fill=(40, 150, 60), width=2)
    for px, py in real_points:
        draw.rectangle([(px - 3, py - 3), (px + 3, py + 3)], fill=(40, 150, 60))
    points = [to_xy(a, m) for a, m in zip(ages, means)]
    draw.line(points, fill=(200, 60, 40), width=2)
    for a, m, e in zip(ages, means, errors):
        px, py = to_xy(a, m)
        _, y_low = to_xy(a, m - e)
        _, y_high = to_xy(a, m + e)
        draw.line([(px, y_low), (px, y_high)], fill=(200, 60, 40))
        draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=(200, 60, 40))
    draw.text((left, 12), title, fill="black", font=font)
    draw.text((width // 2 - 110, height - 24), "age requested from the generator (years)", fill="black", font=font)
    legend = [((200, 60, 40), "generated faces: mean estimated age (+- s.e.)"),
              ((40, 150, 60), "real test faces: mean estimated age, by true age"),
              ((170, 170, 170), "estimated = requested"),
              ((120, 120, 120), "group centres (ticks on the x axis)")]
    for k, (colour, text) in enumerate(legend):
        y = top + 8 + 14 * k
        draw.line([(left + 10, y + 6), (left + 30, y + 6)], fill=colour, width=3)
        draw.text((left + 36, y), text, fill="black", font=font)
    vertical = Image.new("RGB", (220, 14), "white")
    ImageDraw.Draw(vertical).text((0, 0), "evaluator's estimated age (years)", fill="black", font=font)
    image.paste(vertical.rotate(90, expand=True), (6, top + 80))
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the TFDS folder holding the generator's dataset "
                        "(e.g. workdirs/tfds; its test split is used)")
    parser.add_argument("--evaluator", required=True,
                        help="an exported age evaluator (e.g. workdirs/utkface_cpu/age_evaluator/export)")
    parser.add_argument("--checkpoint", help="a generator (workdir, checkpoint or export); default: the shipped one")
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--ages", type=float, nargs="+", default=DEFAULT_AGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write the chart here (PNG)")
    parser.add_argument("--strip", help="write the progression of the first --strip-faces faces here (PNG)")
    parser.add_argument("--strip-faces", type=int, default=4)
    parser.add_argument("--strip-frames", type=int, default=9)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    start = time.time()

    ager = (inference.FaceAger.from_checkpoint(args.checkpoint) if args.checkpoint
            else inference.FaceAger.from_pretrained())
    if ager.loaded.run_config is None:
        raise ValueError(f"{ager.loaded.source} has no run config: the benchmark needs to know its dataset")
    data = ml_collections.ConfigDict(ager.loaded.run_config.data.to_dict())  # a copy: the run's stays
    data.data_dir = args.data
    split = data.get("test_split", "test")
    faces = sources.load_faces(data, split)
    source_groups = tuple(data.source_groups)
    candidates = faces.indices_of_groups(source_groups)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(candidates, size=min(args.faces, len(candidates)), replace=False))
    ages = np.asarray(continuous_age.check_requested_ages(args.ages))
    judge = EstimatedAge(args.evaluator)

    g_inputs = ager.to_generator_input(faces.images(rows))
    outputs = ager.age_generator_inputs_to_ages(g_inputs, ages)  # (N, A, S, S, 3)
    estimated_age, estimated_group = judge(outputs.reshape((-1,) + outputs.shape[2:]))
    estimated_age = estimated_age.reshape(len(rows), len(ages))
    estimated_group = estimated_group.reshape(len(rows), len(ages))
    source_age, _ = judge(inference.generator_input_pixels(g_inputs))

    per_age = []
    for k, requested in enumerate(ages):
        mean, error = mean_and_error(estimated_age[:, k])
        per_age.append({"requested_age": float(requested),
                        "condition": [round(float(w), 3) for w in continuous_age.age_condition(requested)[0]],
                        "mean_estimated_age": round(mean, 2), "standard_error": round(error, 2),
                        "median_estimated_age": round(float(np.median(estimated_age[:, k])), 2),
                        "mean_estimated_group": round(float(estimated_group[:, k].mean()), 3)})
    means = np.array([row["mean_estimated_age"] for row in per_age])
    steps = np.diff(estimated_age, axis=1)
    falls = [{"from_age": float(ages[k]), "to_age": float(ages[k + 1]),
              "change_of_mean": round(float(np.mean(steps[:, k])), 2),
              "faces_whose_estimate_falls": round(float(np.mean(steps[:, k] < -FLAT_YEARS)), 3)}
             for k in range(len(ages) - 1) if np.mean(steps[:, k]) < -FLAT_YEARS]
    per_face_rho = np.array([spearman(ages, estimated_age[i]) for i in range(len(rows))])

    # The evaluator on every real test face, by true age (bins around the requested ages).
    real_age = []
    for start_row in range(0, len(faces), 256):
        indices = np.arange(start_row, min(start_row + 256, len(faces)))
        pixels = np.asarray(jnp.clip(jnp.round(preprocessing.legacy_resize_bilinear(
            jnp.asarray(faces.images(indices), jnp.float32), ager.image_size, ager.image_size)), 0, 255))
        real_age.append(judge(pixels.astype(np.uint8))[0])
    real_age = np.concatenate(real_age)
    edges = np.arange(10.0, 75.0, 5.0)
    real = []
    for low, high in zip(edges[:-1], edges[1:]):
        selected = (faces.age >= low) & (faces.age < high)
        if selected.sum() >= 5:
            mean, error = mean_and_error(real_age[selected])
            real.append({"true_ages": f"{int(low)}-{int(high) - 1}", "faces": int(selected.sum()),
                         "mean_true_age": round(float(faces.age[selected].mean()), 2),
                         "mean_estimated_age": round(mean, 2), "standard_error": round(error, 2)})

    report = {
        "generator": ager.loaded.source, "generator_step": ager.loaded.step, "bn_mode": ager.bn_mode,
        "evaluator": os.path.abspath(args.evaluator), "faces": int(len(rows)), "split": faces.name,
        "source_groups": list(source_groups), "seed": args.seed,
        "group_centres": list(AGE_GROUP_CENTRES),
        "estimated_age_of_the_inputs": round(float(source_age.mean()), 2),
        "per_requested_age": per_age,
        "mean_rises_monotonically": not falls,
        "where_the_mean_falls": falls,
        "mean_rise_first_to_last": round(float(means[-1] - means[0]), 2),
        "per_face_spearman_requested_vs_estimated": {
            "median": round(float(np.nanmedian(per_face_rho)), 3),
            "share_above_0.5": round(float(np.mean(per_face_rho > 0.5)), 3)},
        "faces_with_a_non_decreasing_estimate": round(float(np.mean(np.all(steps >= -FLAT_YEARS, axis=1))), 3),
        "faces_with_a_non_decreasing_estimate_past_the_21_30_centre": round(float(np.mean(np.all(
            steps[:, ages[:-1] >= AGE_GROUP_CENTRES[1]] >= -FLAT_YEARS, axis=1))), 3),
        "real_test_faces_by_true_age": real,
        "seconds": round(time.time() - start, 1),
    }
    if args.plot:
        draw_plot(args.plot, ages, means, np.array([row["standard_error"] for row in per_age]), real,
                  f"{len(rows)} held-out faces ({faces.name}) x {len(ages)} requested ages")
        report["plot"] = args.plot
    if args.strip:
        frame_ages = continuous_age.progression_ages(args.strip_frames)
        strip_rows = g_inputs[:args.strip_faces]
        frames = ager.age_generator_inputs_to_ages(strip_rows, frame_ages)
        sheet = visualization.make_grid(
            [[inference.generator_input_pixels(g)] + list(f) for g, f in zip(strip_rows, frames)],
            column_titles=["input"] + [continuous_age.age_label(a) for a in frame_ages])
        visualization.save_png(args.strip, sheet)
        report["strip"] = {"path": args.strip, "frame_ages": list(frame_ages),
                           "faces": [int(r) for r in rows[:args.strip_faces]]}
    print_report(report, args.json)


if __name__ == "__main__":
    main()
