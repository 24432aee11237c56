"""Age the faces in your own photos.

    python -m ipcgan_jax.age me.jpg family/            # the shipped real-face model
    python -m ipcgan_jax.age me.jpg --workdir=workdirs/utkface_cpu
    python -m ipcgan_jax.age me.jpg --checkpoint=converted/generator --groups 3 4 --paste-back
    python -m ipcgan_jax.age me.jpg --age 25 37 60        # ages in years, between the groups
    python -m ipcgan_jax.age me.jpg --progression --frames 21 --duration 4 --paste-back

For each photo: detect the largest face (--all-faces: every face), align it as the
training data was aligned, and write into --out (default: a new folder `aged`,
`aged_1`, ... in the current directory):

  NAME_grid.png             the aligned input beside each age group, labelled 11-20 ... 51+
  NAME_<age range>.png      one image per age group
  NAME_<age range>_photo.png  with --paste-back: the aged face pasted into the photo
  NAME_<age>y.png ...       with --age: one image per age (37y, 60y; also _photo)
  NAME_progression.webp     with --progression: an animation from 11-20 to 51+ through
                            the ages between (--frames, --duration; --animation-format gif)
  NAME_progression_strip.png  its frames side by side, labelled with their ages
  NAME_progression_photo.webp  with --progression --paste-back: the same in the photo

Ages in years are blends of the two nearest groups' condition maps
(`ipcgan_jax.continuous_age.age_condition`; the network was trained on single groups only).
(NAME_face<k>_... for the k-th face with --all-faces.) Photos without a usable face, and
files in the input folders that are not images, are counted, reported and skipped.
Nothing is written into, or changed in, the input folders, and no existing file is
overwritten; a file that cannot be written completely is removed and stops the run, and
an output folder the run created stays only if something was written into it. Errors in
the arguments, the model or the paths end in one line (`error: ...`, exit status 2). See
`ipcgan_jax.inference` for the Python API and how BatchNorm behaves at inference.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ipcgan_jax import checkpointing, continuous_age, inference, visualization
from ipcgan_jax.constants import MAX_REQUESTED_AGE, MIN_AGE
from ipcgan_jax.data import images
from ipcgan_jax.data.images import ImageReadError

# Files in input folders read as photos (by name); others are left out and reported. HEIC /
# AVIF are listed so that a folder of phone photos gets each one reported (Pillow reads
# them only with a plugin) rather than silently left out.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".heic", ".heif", ".avif")
# The --progression animation's defaults (also the web page's, ipcgan_jax.serve).
DEFAULT_FRAMES = 21
DEFAULT_DURATION_S = 4.0


class UsageError(ValueError):
    """A request the tool refuses before ageing anything (the message says what to change)."""


def list_photos(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(photos, other files): the files as given, and inside folders, recursively and
    through links to folders (each folder once), the files named as images and the others,
    each list sorted per folder."""
    photos, others = [], []
    for item in inputs:
        if os.path.isdir(item):
            found, seen = [], set()
            for root, folders, names in os.walk(item, followlinks=True):
                real = os.path.realpath(root)
                if real in seen:  # a link back to a folder already walked
                    folders[:] = []
                    continue
                seen.add(real)
                found.extend(os.path.join(root, name) for name in names)
            photos.extend(sorted(p for p in found if p.lower().endswith(IMAGE_EXTENSIONS)))
            others.extend(sorted(p for p in found if not p.lower().endswith(IMAGE_EXTENSIONS)))
        elif os.path.exists(item):
            photos.append(item)
        else:
            raise FileNotFoundError(f"input {item!r} does not exist")
    return photos, others


def is_inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def claim_output_dir(out: str | None, inputs: Sequence[str]) -> tuple[str, bool]:
    """(folder, whether this call created it): --out, or a new `aged[_N]` in the current
    directory, created at once so that two runs never share one; never inside an input
    folder, never an existing non-empty folder."""
    input_dirs = [d for d in inputs if os.path.isdir(d)]

    def check_outside_inputs(folder: str) -> None:
        for input_dir in input_dirs:
            if is_inside(folder, input_dir):
                raise UsageError(f"output folder {folder} is inside the input folder {input_dir}; "
                                 "choose --out elsewhere (inputs are never written to)")

    if out is None:
        base = os.path.abspath("aged")
        check_outside_inputs(base)
        for suffix in itertools.count():
            candidate = f"{base}_{suffix}" if suffix else base
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            return candidate, True
    out = os.path.abspath(out)
    check_outside_inputs(out)
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        raise FileExistsError(f"output {out} exists and is not an empty folder; "
                              "choose a new --out (nothing is overwritten)")
    existed = os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the output folder {out}: {error.strerror or error}") from None
    return out, not existed


def _unique_stem(path: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    candidate, suffix = stem, 1
    while candidate in used:
        suffix += 1
        candidate = f"{stem}_{suffix}"
    used.add(candidate)
    return candidate


def _save_new(path: str, image: np.ndarray) -> None:
    visualization.write_new_file(path, visualization.png_bytes(image))


def frame_ms(num_frames: int, duration_s: float) -> int:
    """Milliseconds per frame of an animation of `num_frames` lasting `duration_s` seconds."""
    if not duration_s > 0:
        raise ValueError(f"the animation's duration must be positive, got {duration_s} s")
    return max(1, round(1000.0 * duration_s / num_frames))


def progression_strip(face: inference.AgedFace) -> np.ndarray:
    """The frames of a progression (`face.ages`) side by side, labelled with their ages."""
    return visualization.make_grid([list(face.outputs)],
                                   column_titles=[continuous_age.age_label(a) for a in face.ages])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ipcgan_jax.age", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="photos and/or folders of photos")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workdir", help="a GAN run's workdir (its latest checkpoint); default: the "
                        f"real-face generator shipped with the package ({inference.DEFAULT_PRETRAINED})")
    source.add_argument("--checkpoint", help="a WORKDIR/checkpoints/<step> folder or an exported "
                        "generator (python -m ipcgan_jax.export or python -m ipcgan_jax.convert)")
    parser.add_argument("--step", type=int, default=None,
                        help="with --workdir: which of its checkpoints (default: the latest)")
    parser.add_argument("--out", help="output folder (default: a new ./aged, ./aged_1, ...)")
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument("--groups", type=int, nargs="+", help="age groups to make (default: all), 0 = 11-20")
    targets.add_argument("--age", type=float, nargs="+", metavar="YEARS",
                         help=f"ages in years to make instead ({MIN_AGE}..{MAX_REQUESTED_AGE}; blends of the "
                         "two nearest groups, see ipcgan_jax.continuous_age.age_condition)")
    parser.add_argument("--progression", action="store_true",
                        help="also write an ageing animation from 11-20 to 51+ and its frame strip")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"frames of the --progression animation (default {DEFAULT_FRAMES})")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                        help=f"seconds the --progression animation lasts (default {DEFAULT_DURATION_S:g})")
    parser.add_argument("--animation-format", choices=visualization.ANIMATION_FORMATS, default="webp",
                        help="--progression animation file: lossless animated WebP (default) or GIF")
    parser.add_argument("--paste-back", action="store_true", help="also paste each aged face into the photo")
    parser.add_argument("--all-faces", action="store_true", help="age every face, not only the largest")
    parser.add_argument("--min-face-size", type=int, default=None,
                        help=f"refuse faces narrower than this many pixels (default {inference.DEFAULT_MIN_FACE_SIZE})")
    parser.add_argument("--bn-mode", choices=("moving", "single"), default=None,
                        help="BatchNorm at inference (see ipcgan_jax.inference; default: moving)")
    parser.add_argument("--aligned-size", type=int, default=None,
                        help="side of the aligned crop (default: what the run's data implies)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="generator resolution (default: the run's; 128 for converted original weights, "
                        "which record none)")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling (finds smaller faces)")
    args = parser.parse_args(argv)
    for name, value, least in (("--min-face-size", args.min_face_size, 1), ("--aligned-size", args.aligned_size, 8),
                               ("--image-size", args.image_size, 8), ("--upsample", args.upsample, 0)):
        if value is not None and value < least:
            parser.error(f"{name} must be at least {least}, got {value}")
    try:
        if args.age:
            args.age = list(continuous_age.check_requested_ages(args.age))
        if args.progression:
            continuous_age.progression_ages(args.frames)
            if not math.isfinite(args.duration):
                raise ValueError(f"the animation's duration must be a finite number of seconds, got {args.duration}")
            frame_ms(args.frames, args.duration)
    except ValueError as error:
        parser.error(str(error))
    labels = [continuous_age.age_label(a) for a in args.age] if args.age else args.groups or []
    repeated = sorted({str(label) for label in labels if labels.count(label) > 1})
    if repeated:
        parser.error(f"{'--age' if args.age else '--groups'} asks twice for {', '.join(repeated)} "
                     "(file names keep an age's first 6 digits)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _age_photos(args)
    except (UsageError, OSError, checkpointing.CheckpointError) as error:  # the message says what to change
        print(f"error: {error}", file=sys.stderr)
        return 2


def _load_ager(args: argparse.Namespace) -> inference.FaceAger:
    kwargs = {"upsample": args.upsample, "bn_mode": args.bn_mode, "image_size": args.image_size,
              "aligned_size": args.aligned_size}
    if args.min_face_size is not None:
        kwargs["min_face_size"] = args.min_face_size
    if not (args.workdir or args.checkpoint):
        return inference.FaceAger.from_pretrained(**kwargs)
    try:
        return inference.FaceAger.from_checkpoint(args.workdir or args.checkpoint, step=args.step, **kwargs)
    except checkpointing.STEP_ERRORS as error:
        raise checkpointing.CheckpointError(f"{error}; choose a checkpoint with --workdir=WORKDIR --step=N") from None


def _age_photos(args: argparse.Namespace) -> int:
    if args.step is not None and not args.workdir:
        raise UsageError("--step needs --workdir (a --checkpoint folder names its step)")
    # (frame ages, ms per frame) of the --progression animation
    progression = ((continuous_age.progression_ages(args.frames), frame_ms(args.frames, args.duration))
                   if args.progression else None)
    photos, other_files = list_photos(args.inputs)
    if not photos:
        listed = f" ({len(other_files)} other file(s), none named as an image)" if other_files else ""
        print(f"no image files found in the inputs{listed}", file=sys.stderr)
        return 1
    out, created = claim_output_dir(args.out, args.inputs)
    try:
        return _age_into(args, photos, other_files, out, progression)
    finally:
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)  # nothing written: no empty folder left behind


def _age_into(args: argparse.Namespace, photos: list[str], other_files: list[str], out: str,
              progression: tuple[tuple[float, ...], int] | None) -> int:
    ages = args.age
    ager = _load_ager(args)
    if ager.trained_on_synthetic_faces:
        print(f"note: {ager.loaded.source} was trained on the built-in synthetic (drawn) faces, not on photos: "
              "on real photos it draws noise. For real photos, leave out --workdir/--checkpoint to use the "
              "shipped real-face model, or train one (configs/utkface.py).", file=sys.stderr)
    try:
        groups = None if ages else ager.resolve_groups(args.groups)
    except ValueError as error:
        raise UsageError(f"--groups: {error}") from None
    labels = [continuous_age.age_label(a) for a in ages] if ages else ager.group_labels(groups)
    print(f"model: {ager.loaded.source} (step {ager.loaded.step}), BN mode {ager.bn_mode}; writing to {out}",
          file=sys.stderr)
    used: set[str] = set()
    skipped: list[tuple[str, str]] = []
    num_faces = 0
    for photo in tqdm(photos, desc="ageing", unit="photo", disable=len(photos) < 2):
        try:
            original = images.as_rgb_uint8(photo)
            faces = ager.age_faces(original, groups, all_faces=args.all_faces, ages=ages)
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
            if progression is not None:
                frame_ages, animation_ms = progression
                frames = ager.reage(face, ages=frame_ages)
                suffix = args.animation_format
                visualization.write_new_file(os.path.join(out, f"{name}_progression.{suffix}"), visualization.animation_bytes(
                    frames.outputs, frame_ms=animation_ms, image_format=suffix))
                _save_new(os.path.join(out, f"{name}_progression_strip.png"), progression_strip(frames))
                if args.paste_back:
                    visualization.write_new_file(os.path.join(out, f"{name}_progression_photo.{suffix}"), visualization.animation_bytes(
                        frames.paste_back(original), frame_ms=animation_ms, image_format=suffix))
            num_faces += 1
    print(f"aged {num_faces} face(s) from {len(photos) - len(skipped)} of {len(photos)} photo(s)"
          + (f" into {out}" if num_faces else ": nothing written"), file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} photo(s):", file=sys.stderr)
        for photo, reason in skipped:
            print(f"  {photo}: {reason}", file=sys.stderr)
    if other_files:
        shown = ", ".join(other_files[:10]) + (f", ... ({len(other_files) - 10} more)" if len(other_files) > 10 else "")
        print(f"left out {len(other_files)} file(s) in the input folders not named as images "
              f"({', '.join(IMAGE_EXTENSIONS)}): {shown}", file=sys.stderr)
    return 0 if num_faces else 1


if __name__ == "__main__":
    sys.exit(main())
