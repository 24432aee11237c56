"""How the original IPCGAN framed its CACD crops, against a template of the project's aligner; prints JSON.

  python benchmarks/bench_cacd_framing.py --crops DIR [--template cacd] [--json FILE] [--landmarks-json FILE]

DIR holds square face crops made by the original code (its public samples are 400x400
JPEGs, `<age>_<Name>_<NNNN>.jpg_0.jpg`). For each crop, dlib's detector (upsample 1, as
the builders) and 5-point model, through the project's `FaceAligner`, find the
landmarks of the largest face, and `alignment.crop_realignment` measures the similarity
that re-aligning the crop to the template would apply:

- scale: 1 when the template frames a face as the original did; above 1 when the
  template's crop is tighter (less forehead and hair);
- centre shift: where the crop's centre moves, (x, y) pixels of the crop side (+ right,
  + down), and rotation.

All crops must share one square size. Printed: per crop and the median over crops (the median of x and of y, and the length of
that median shift), whether the median meets the calibration target (scale 1.00 +- 0.03,
centre shift at most 5 px of 400), the crops where no face was found, and the measured
framing: the robust mean of the landmarks as fractions of the side
(`face_templates.robust_mean_landmarks`, the crops it leaves out named) beside the
stored `CACD_CROP_LANDMARKS` that the `cacd` template is made of. --landmarks-json
writes the detected landmarks (the fixture tests/data/cacd_original_crop_landmarks.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipcgan_jax.constants import ALIGNMENT_TEMPLATES  # noqa: E402
from ipcgan_jax.data import face_templates  # noqa: E402
from ipcgan_jax.data.alignment import FaceAligner, crop_realignment  # noqa: E402
from ipcgan_jax.data.images import read_image  # noqa: E402
from json_report import print_report  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# The calibration target of the `cacd` template: the original's crops re-align to about
# the identity. Shift in pixels of a 400 px crop, scaled to other sizes.
SCALE_TOLERANCE = 0.03
MAX_CENTRE_SHIFT_PER_400_PX = 5.0


def crop_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--crops: no folder {folder!r}")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"--crops: no .jpg/.jpeg/.png images in {folder!r}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", required=True, help="folder of the original code's aligned crops")
    parser.add_argument("--template", default=face_templates.DEFAULT_TEMPLATE, choices=ALIGNMENT_TEMPLATES)
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--landmarks-json", help="write the detected landmarks here (the test fixture's format)")
    args = parser.parse_args()

    files = crop_files(args.crops)
    aligner = FaceAligner(template=args.template)
    start = time.perf_counter()
    found, failed, several_faces, sizes = {}, [], [], set()
    for name in files:
        crop = read_image(os.path.join(args.crops, name))
        sizes.add(crop.shape[:2])
        if crop.shape[0] != crop.shape[1] or len(sizes) > 1:
            raise ValueError(f"{os.path.join(args.crops, name)}: crops must all be one square size, "
                             f"found {sorted(sizes)}")
        faces = aligner.detect(crop)
        if not faces:
            failed.append(name)
            continue
        if len(faces) > 1:
            several_faces.append(name)
        found[name] = max(faces, key=lambda f: f.area).landmarks
    seconds = time.perf_counter() - start
    if not found:
        raise ValueError(f"--crops: dlib found no face in any of the {len(files)} images of {args.crops!r}")

    (side, _), = sizes
    max_shift = MAX_CENTRE_SHIFT_PER_400_PX * side / 400.0
    per_crop = {}
    for name, landmarks in found.items():
        realignment = crop_realignment(landmarks, side, args.template)
        per_crop[name] = {
            "scale": round(realignment.scale, 4),
            "rotation_degrees": round(realignment.rotation_degrees, 2),
            "centre_shift_x_px": round(float(realignment.centre_shift[0]), 2),
            "centre_shift_y_px": round(float(realignment.centre_shift[1]), 2),
        }
    scale = float(np.median([c["scale"] for c in per_crop.values()]))
    shift = np.array([np.median([c[f"centre_shift_{axis}_px"] for c in per_crop.values()]) for axis in "xy"])
    fractions = (np.stack(list(found.values())) + 0.5) / side
    measured, kept = face_templates.robust_mean_landmarks(fractions)
    padding, vertical_shift = face_templates.fit_padding_and_shift(measured)

    result = {
        "crops_dir": args.crops,
        "template": args.template,
        "crops": len(files),
        "crop_size": side,
        "detect_s": round(seconds, 1),
        "faces_found": len(found),
        "failures": len(failed),
        "failed_files": failed,
        "crops_with_several_faces": several_faces,
        "median": {
            "scale": round(scale, 4),
            "centre_shift_x_px": round(float(shift[0]), 2),
            "centre_shift_y_px": round(float(shift[1]), 2),
            "centre_shift_px": round(float(np.linalg.norm(shift)), 2),
            "per_crop_centre_shift_px": round(float(np.median(
                [np.hypot(c["centre_shift_x_px"], c["centre_shift_y_px"]) for c in per_crop.values()])), 2),
            "rotation_degrees": round(float(np.median([c["rotation_degrees"] for c in per_crop.values()])), 2),
        },
        "target": {
            "scale": f"1.00 +- {SCALE_TOLERANCE}",
            "max_centre_shift_px": max_shift,
            "scale_met": bool(abs(scale - 1.0) <= SCALE_TOLERANCE),
            "centre_shift_met": bool(np.linalg.norm(shift) <= max_shift),
        },
        "measured_framing": {
            "landmarks_fraction_of_side": np.round(measured, 4).tolist(),
            "crops_in_robust_mean": int(kept.sum()),
            "left_out_of_mean": [name for name, k in zip(found, kept) if not k],
            "fitted_dlib_padding": round(padding, 4),
            "fitted_dlib_vertical_shift": round(vertical_shift, 4),
            "max_difference_from_stored_cacd_px": round(
                float(np.abs(measured - face_templates.CACD_CROP_LANDMARKS).max() * side), 3),
        },
        "per_crop": per_crop,
    }
    print_report(result, args.json, indent=2)
    if args.landmarks_json:
        # dlib's landmarks are whole pixels; one crop per line keeps the file readable.
        lines = [f"  {json.dumps(name)}: {json.dumps(np.rint(points).astype(int).tolist())}"
                 for name, points in found.items()]
        header = (f'{{"about": "dlib 5-point landmarks (x, y), pixel centres at integers, found by '
                  f'benchmarks/bench_cacd_framing.py on the original IPCGAN code\'s CACD crops",\n'
                  f' "crop_size": {side},\n "landmarks": {{\n')
        with open(args.landmarks_json, "w") as handle:
            handle.write(header + ",\n".join(lines) + "\n}}\n")


if __name__ == "__main__":
    main()
