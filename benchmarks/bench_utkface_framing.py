"""How UTKFace's chips are framed, measured with the project's aligner; prints JSON.

  python benchmarks/bench_utkface_framing.py [--data DIR [DIR ...]] [--limit N] [--json FILE]

For every 200x200 "aligned and cropped" chip (each DIR holds labels.csv and images/),
dlib's detector (upsample 1, as the builders) and 5-point model find the landmarks:

- failures: chips where no face is found, with what would have found it: "found at
  upsample 2" (the chip doubled once more), "found with a border" (a black border of
  a quarter of the side around the chip: the face fills it), or "not found" (neither:
  profile, occlusion, blur, no face at all), and the failure rate per age group and
  per race (labels.csv's race);
- the template: the robust mean of the landmarks as fractions of the chip side (chips
  whose landmarks lie further from the median face than 2.5x the median distance are
  left out), beside the `utkface` template in `ipcgan_jax/data/face_templates.py`;
- residuals: re-aligning each chip to a template moves it by a similarity transform;
  its scale change, rotation and the shift of the chip's centre (pixels of the 200 px
  chip), median and 90th percentile, for the `utkface` and the `cacd` template, and
  the landmarks' distance to the template that no similarity removes (face shape).
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipcgan_jax.constants import AGE_GROUP_LABELS  # noqa: E402
from ipcgan_jax.data import face_templates  # noqa: E402
from ipcgan_jax.data.alignment import (  # noqa: E402
    DlibFaceDetector,
    FaceAligner,
    apply_transform,
    estimate_similarity_transform,
    face_template,
)
from ipcgan_jax.data.images import read_image  # noqa: E402
from json_report import print_report  # noqa: E402

RACES = ("White", "Black", "Asian", "Indian", "Other")  # labels.csv's race 0..4
BORDER_FRACTION = 0.25  # of the chip side, on every side, for the "fills the chip" probe


def read_labels(folder: str) -> list[dict[str, str]]:
    with open(os.path.join(folder, "labels.csv"), newline="") as handle:
        return [{**row, "path": os.path.join(folder, "images", row["file"])} for row in csv.DictReader(handle)]


def failure_reason(detector: DlibFaceDetector, chip: np.ndarray, upsample: int) -> str:
    """What finds a face that dlib missed at `upsample` (module doc)."""
    if detector(chip, upsample + 1):
        return "found at upsample 2"
    border = int(round(BORDER_FRACTION * chip.shape[0]))
    framed = np.pad(chip, ((border, border), (border, border), (0, 0)))
    if detector(framed, upsample):
        return "found with a border"
    return "not found"


def residuals(landmarks_px: np.ndarray, template_px: np.ndarray, side: int) -> dict[str, dict[str, float]]:
    """Statistics of the similarity that re-aligns each chip (landmarks (N, 5, 2)) to the template."""
    centre = np.array([(side - 1) / 2.0] * 2)
    scale_change, rotation, shift, shape = [], [], [], []
    for points in landmarks_px:
        transform = estimate_similarity_transform(points, template_px)
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
        scale_change.append(abs(scale - 1.0) * 100.0)
        rotation.append(abs(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))))
        shift.append(float(np.linalg.norm(apply_transform(transform, centre[None])[0] - centre)))
        shape.append(float(np.sqrt(((apply_transform(transform, points) - template_px) ** 2).sum(axis=1).mean())))

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(float(np.median(values)), 3), "p90": round(float(np.percentile(values, 90)), 3)}

    return {"scale_change_percent": summary(scale_change), "rotation_degrees": summary(rotation),
            "centre_shift_px": summary(shift), "landmark_rms_after_px": summary(shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="UTKFace folders (labels.csv + images/)")
    parser.add_argument("--limit", type=int, default=0, help="chips per folder, 0: all")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()

    detector = DlibFaceDetector()
    aligner = FaceAligner(output_size=200, template="utkface", face_detector=detector)
    rows = []
    for folder in args.data:
        folder_rows = read_labels(folder)
        rows.extend(folder_rows[:args.limit] if args.limit else folder_rows)
    start = time.perf_counter()
    landmarks, sides, failures, several_faces = [], set(), [], 0
    for row in rows:
        chip = read_image(row["path"])
        sides.add(chip.shape[:2])
        faces = aligner.detect(chip)
        if not faces:
            failures.append({"file": row["file"], "age_group": int(row["age_group"]), "race": int(row["race"]),
                             "reason": failure_reason(detector, chip, aligner.upsample)})
            continue
        several_faces += len(faces) > 1
        landmarks.append(max(faces, key=lambda f: f.area).landmarks)
    seconds = time.perf_counter() - start
    if sides != {(200, 200)}:
        raise ValueError(f"expected 200x200 chips, found sizes {sorted(sides)}")
    side = 200
    landmarks = np.stack(landmarks)
    fractions = (landmarks + 0.5) / side
    template, kept = face_templates.robust_mean_landmarks(fractions)
    padding, shift = face_templates.fit_padding_and_shift(template)
    stored = face_templates.UTKFACE_CHIP_LANDMARKS

    reasons = collections.Counter(f["reason"] for f in failures)
    groups = collections.Counter(AGE_GROUP_LABELS[f["age_group"]] for f in failures)
    races = collections.Counter(RACES[f["race"]] for f in failures)
    chips_per_race = collections.Counter(RACES[int(row["race"])] for row in rows)
    result = {
        "folders": args.data,
        "chips": len(rows),
        "detect_s": round(seconds, 1),
        "chips_per_s": round(len(rows) / seconds, 1),
        "faces_found": len(landmarks),
        "failures": len(failures),
        "failure_percent": round(100.0 * len(failures) / len(rows), 2),
        "failure_reasons": dict(reasons.most_common()),
        "failures_per_age_group": {label: groups.get(label, 0) for label in AGE_GROUP_LABELS},
        "failure_percent_per_race": {race: round(100.0 * races.get(race, 0) / chips_per_race[race], 1)
                                     for race in RACES if chips_per_race[race]},
        "chips_with_several_faces": several_faces,
        "template": {
            "landmarks_fraction_of_side": np.round(template, 4).tolist(),
            "chips_in_robust_mean": int(kept.sum()),
            "landmark_std_fraction": np.round(fractions.std(axis=0), 4).tolist(),
            "fitted_dlib_padding": round(padding, 4),
            "fitted_dlib_vertical_shift": round(shift, 4),
            "max_difference_from_stored_utkface_px": round(float(np.abs(template - stored).max() * side), 3),
        },
        # The template just measured (the stored one is these numbers, rounded).
        "realign_to_utkface": residuals(landmarks, template * side - 0.5, side),
        "realign_to_cacd": residuals(landmarks, face_template(side, template="cacd"), side),
        "failed_files": failures,
    }
    print_report(result, args.json, indent=2)


if __name__ == "__main__":
    main()
