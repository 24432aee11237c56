"""Age the faces in your own photos.

    python -m ipcgan_jax.age me.jpg family/            # the shipped real-face model
    python -m ipcgan_jax.age me.jpg --workdir=workdirs/utkface_cpu
    python -m ipcgan_jax.age me.jpg --checkpoint=converted/generator --groups 3 4 --paste-back

For each photo: detect the largest face (--all-faces: every face), align it as the
training data was aligned, and write into --out (default: a new folder `aged`,
`aged_1`, ... in the current directory):

  NAME_grid.png             the aligned input beside each age group, labelled 11-20 ... 51+
  NAME_<age range>.png      one image per age group
  NAME_<age range>_photo.png  with --paste-back: the aged face pasted into the photo

(NAME_face<k>_... for the k-th face with --all-faces.) Photos without a usable face are
reported and skipped. Nothing is written into, or changed in, the input folders, and no
existing file is overwritten. See `ipcgan_jax.inference` for the Python API and how
BatchNorm behaves at inference.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ipcgan_jax import inference, visualization
from ipcgan_jax.data.images import ImageReadError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_photos(inputs: Sequence[str]) -> list[str]:
    """Files as given, and the image files (by extension) inside folders, recursively, sorted."""
    photos = []
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(root, name) for root, _, names in os.walk(item) for name in names
                     if name.lower().endswith(IMAGE_EXTENSIONS)]
            photos.extend(sorted(found))
        elif os.path.exists(item):
            photos.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} does not exist")
    return photos


def _is_inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def choose_output_dir(out: str | None, inputs: Sequence[str]) -> str:
    """--out, or a fresh `aged[_N]` in the current directory; never inside an input folder,
    never an existing non-empty folder."""
    input_dirs = [d for d in inputs if os.path.isdir(d)]
    if out is None:
        base = os.path.abspath("aged")
        out, suffix = base, 0
        while os.path.exists(out):
            suffix += 1
            out = f"{base}_{suffix}"
    out = os.path.abspath(out)
    for folder in input_dirs:
        if _is_inside(out, folder):
            raise ValueError(f"output folder {out} is inside the input folder {folder}; "
                             "choose --out elsewhere (inputs are never written to)")
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise FileExistsError(f"output {out} exists and is not an empty folder; "
                              "choose a new --out (nothing is overwritten)")
    return out


def _unique_stem(path: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    candidate, suffix = stem, 1
    while candidate in used:
        suffix += 1
        candidate = f"{stem}_{suffix}"
    used.add(candidate)
    return candidate


def _save_new(path: str, image: np.ndarray) -> None:
    with open(path, "xb") as f:  # exclusive: never overwrites
        Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ipcgan_jax.age", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="photos and/or folders of photos")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workdir", help="a GAN run's workdir (its latest checkpoint); default: the "
                        f"real-face generator shipped with the package ({inference.DEFAULT_PRETRAINED})")
    source.add_argument("--checkpoint", help="a WORKDIR/checkpoints/<step> folder or an exported "
                        "generator (python -m ipcgan_jax.export or python -m ipcgan_jax.convert)")
    parser.add_argument("--out", help="output folder (default: a new ./aged, ./aged_1, ...)")
    parser.add_argument("--groups", type=int, nargs="+", help="age groups to make (default: all), 0 = 11-20")
    parser.add_argument("--paste-back", action="store_true", help="also paste each aged face into the photo")
    parser.add_argument("--all-faces", action="store_true", help="age every face, not only the largest")
    parser.add_argument("--min-face-size", type=int, default=None,
                        help="refuse faces narrower than this many pixels (default 40)")
    parser.add_argument("--bn-mode", choices=("moving", "single"), default=None,
                        help="BatchNorm at inference (see ipcgan_jax.inference; default: moving)")
    parser.add_argument("--aligned-size", type=int, default=None,
                        help="side of the aligned crop (default: what the run's data implies)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="generator resolution for exported generators (default 128)")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling (finds smaller faces)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    photos = list_photos(args.inputs)
    if not photos:
        print("no image files found in the inputs", file=sys.stderr)
        return 1
    out = choose_output_dir(args.out, args.inputs)
    kwargs = {"upsample": args.upsample, "bn_mode": args.bn_mode}
    if args.min_face_size is not None:
        kwargs["min_face_size"] = args.min_face_size
    if args.workdir or args.checkpoint:
        ager = inference.FaceAger.from_checkpoint(args.workdir or args.checkpoint, image_size=args.image_size,
                                                  aligned_size=args.aligned_size, **kwargs)
    else:
        ager = inference.FaceAger.from_pretrained(image_size=args.image_size, aligned_size=args.aligned_size,
                                                  **kwargs)
    if ager.trained_on_synthetic_faces:
        print(f"note: {ager.loaded.source} was trained on the built-in synthetic (drawn) faces, not on photos: "
              "on real photos it draws noise. For real photos, leave out --workdir/--checkpoint to use the "
              "shipped real-face model, or train one (configs/utkface.py).", file=sys.stderr)
    groups = ager.resolve_groups(args.groups)
    labels = ager.group_labels(groups)
    os.makedirs(out, exist_ok=True)
    print(f"model: {ager.loaded.source} (step {ager.loaded.step}), BN mode {ager.bn_mode}; writing to {out}",
          file=sys.stderr)
    used: set[str] = set()
    skipped: list[tuple[str, str]] = []
    num_faces = 0
    for photo in tqdm(photos, desc="ageing", unit="photo", disable=len(photos) < 2):
        try:
            original = inference.as_rgb_uint8(photo)
            faces = ager.age_faces(original, groups, all_faces=args.all_faces)
        except (ImageReadError, inference.FaceNotFoundError, inference.FaceTooSmallError) as error:
            reason = error.reason if isinstance(error, ImageReadError) else str(error)
            skipped.append((photo, reason))
            tqdm.write(f"skipped {photo}: {reason}", file=sys.stderr)
            continue
        stem = _unique_stem(photo, used)
        for k, face in enumerate(faces):
            name = f"{stem}_face{k + 1}" if args.all_faces else stem
            row = [face.generator_input] + list(face.outputs)
            grid = visualization.make_grid([row], column_titles=["input"] + labels)
            _save_new(os.path.join(out, f"{name}_grid.png"), grid)
            for label, output in zip(labels, face.outputs):
                _save_new(os.path.join(out, f"{name}_{label}.png"), output)
            if args.paste_back:
                for label, pasted in zip(labels, face.paste_back(original)):
                    _save_new(os.path.join(out, f"{name}_{label}_photo.png"), pasted)
            num_faces += 1
    print(f"aged {num_faces} face(s) from {len(photos) - len(skipped)} of {len(photos)} photo(s) into {out}",
          file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} photo(s):", file=sys.stderr)
        for photo, reason in skipped:
            print(f"  {photo}: {reason}", file=sys.stderr)
    return 0 if num_faces else 1


if __name__ == "__main__":
    sys.exit(main())
