"""Reads and aligns many image files on every core, for the dataset builders.

Each worker process builds its own aligner once (the dlib models cannot be pickled) and
returns, for every file, either the square crop or the reason there is none (unreadable,
no face, a detector error), so that one bad file never stops a build.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ipcgan_jax.data.alignment import FaceAligner, crop_and_resize
from ipcgan_jax.data.images import ImageReadError, read_image


@dataclasses.dataclass(frozen=True)
class FaceCropResult:
    """The crop made from one file, or why there is none (`image` None, `reason` set)."""

    path: str
    image: np.ndarray | None
    reason: str | None
    num_faces_found: int


AlignerFactory = Callable[..., FaceAligner]

# Per-worker-process aligner, set once by the Pool initializer. multiprocessing offers no
# other way to give each worker an unpicklable object (the dlib models) built only once.
_worker_aligner: list[FaceAligner | None] = []


def prepare_face_crops(
    paths: Sequence[str],
    *,
    output_size: int,
    aligner_factory: AlignerFactory | None,
    aligner_kwargs: dict | None = None,
    num_workers: int | None = None,
    progress_description: str = "Aligning faces",
) -> Iterator[FaceCropResult]:
    """Reads and aligns many files in parallel, yielding results in the order of `paths`.

    Args:
      paths: image files.
      output_size: side of every crop.
      aligner_factory: builds a `FaceAligner`-like object (has `.align(image)`) in each
        worker as ``aligner_factory(output_size=output_size, **aligner_kwargs)``; None means
        the files are aligned crops already and are only centre-cropped and resized.
      num_workers: processes to use (None: every core; 1: this process, no pool).
        Workers are forked so that injected factories need not be picklable.
    """
    settings = (aligner_factory, dict(aligner_kwargs or {}), int(output_size))
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
    workers = min(workers, max(1, len(paths)))
    progress = tqdm(total=len(paths), desc=progress_description, unit="img")
    try:
        if workers == 1:
            aligner = _build_aligner(settings)
            for path in paths:
                yield _crop_one_file(path, aligner, int(output_size))
                progress.update(1)
            return
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_initialise_worker, initargs=(settings,)) as pool:
            tasks = [(path, int(output_size)) for path in paths]
            chunk_size = max(1, min(16, len(paths) // (4 * workers)))
            for result in pool.imap(_crop_in_worker, tasks, chunksize=chunk_size):
                yield result
                progress.update(1)
    finally:
        progress.close()


def _build_aligner(settings: tuple) -> FaceAligner | None:
    aligner_factory, aligner_kwargs, output_size = settings
    if aligner_factory is None:
        return None
    return aligner_factory(output_size=output_size, **aligner_kwargs)


def _initialise_worker(settings: tuple) -> None:
    # A forked worker inherits the parent's SIGTERM handler (a training loop's, or one that a
    # library installed), but Pool.terminate stops idle workers with SIGTERM while holding
    # their queue's lock: a worker that survives it waits for that lock forever, and so does
    # the build. Workers must die on SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_aligner.clear()
    _worker_aligner.append(_build_aligner(settings))


def _crop_in_worker(task: tuple[str, int]) -> FaceCropResult:
    path, output_size = task
    return _crop_one_file(path, _worker_aligner[0], output_size)


def _crop_one_file(path: str, aligner: FaceAligner | None, output_size: int) -> FaceCropResult:
    try:
        image = read_image(path)
    except ImageReadError as error:
        return FaceCropResult(path, None, error.reason, 0)
    if aligner is None:
        return FaceCropResult(path, crop_and_resize(image, output_size), None, 1)
    try:
        aligned = aligner.align(image)
    except Exception as error:  # a detector failure on one file must not stop a build
        return FaceCropResult(path, None, f"alignment failed ({type(error).__name__}: {error})", 0)
    if aligned is None:
        return FaceCropResult(path, None, "no face found", 0)
    if aligned.image.shape != (output_size, output_size, 3):
        raise ValueError(
            f"aligner returned a {aligned.image.shape} crop, expected {(output_size, output_size, 3)}"
        )
    return FaceCropResult(path, aligned.image, None, aligned.num_faces_found)
