"""A local web page to age a photo (needs the `serve` extra: pip install -e ".[serve]").

    python -m ipcgan_jax.serve                              # the shipped real-face model
    python -m ipcgan_jax.serve --checkpoint=my_generator --port 7860
    python -m ipcgan_jax.serve --workdir=workdirs/utkface_cpu

Open http://127.0.0.1:7860, upload a photo or take one with the camera, type the ages
(years, blends between the age groups: `ipcgan_jax.continuous_age.age_condition`), tick the
animation if wanted, and press "Age". The page shows the grid (the aligned face, then
each age), and the ageing animation from 11-20 to 51+ with its frame strip, each with a
download button (an animation of the whole photo is scaled to at most 1024 pixels on
its longer side). The page is built with Gradio (https://www.gradio.app).

Privacy and files. Photos are aged in memory; nothing is written by this module except
the animation it hands to the page. Gradio keeps uploads and the images it serves as
files in its temp folder; this server gives it a fresh private folder (in RAM, under
/dev/shm, when the machine has it), has Gradio delete every file in it older than
`--keep-minutes` (default 10), and removes the folder when the server stops. Gradio's
usage analytics and update check are off, and so are the telemetry and look-ups of the
Hugging Face client it brings (HF_HUB_OFFLINE); no share link is made (the page is served on
127.0.0.1 only unless --host says otherwise), and the page loads no web fonts: nothing
is fetched from the internet.

Requests are queued and run one at a time (the queue holds --queue-size requests; more
are told the queue is full). A photo without a usable face, a file that is not an image,
an image over --max-megapixels or a file over --max-upload-mb gets a message on the page.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import signal
import sys
import tempfile
import uuid
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ipcgan_jax import age, checkpointing, continuous_age, inference, visualization
from ipcgan_jax.constants import MAX_REQUESTED_AGE, MIN_AGE
from ipcgan_jax.data.images import ImageReadError, read_image

DEFAULT_PORT = 7860
DEFAULT_AGES = "15 25 37 50 60"
DEFAULT_MAX_UPLOAD_MB = 20
DEFAULT_MAX_MEGAPIXELS = 40.0
DEFAULT_KEEP_MINUTES = 10
DEFAULT_QUEUE_SIZE = 16
# What one request may ask for (the page's sliders; enforced on the server too, where a
# client of the API could ask for more): the animation's frames and seconds, and ages.
FRAMES_RANGE = (2, 61)
DURATION_RANGE_S = (0.5, 20.0)
MAX_AGES = 12
# The whole-photo animation is scaled down to this longer side: 21 full-size frames of a
# phone photo would be hundreds of MB to hold and encode.
MAX_ANIMATION_SIDE = 1024
# The Gradio the page needs (pyproject's `serve` extra; requirements-serve.txt pins the tested 6.31.0).
GRADIO_REQUIREMENT = "gradio>=6.31,<7"
# Set before Gradio is imported: no usage analytics or version check, and its Hugging
# Face client neither phones home (telemetry, agent registry) nor looks anything up.
GRADIO_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "monospace"]
# The generator's faces are small (64 px for the shipped model): the page shows them
# scaled up to their boxes; downloads keep the real size. The wide sheets start below
# the box's label, which Gradio draws over the image's top-left corner (where the
# sheet's first column title is).
RESULT_LABEL_CLEARANCE_PX = 30
RESULT_CSS = ("#grid img, #animation img, #strip img {width: 100%; height: 100%; object-fit: contain;}\n"
              f"#grid img, #strip img {{padding-top: {RESULT_LABEL_CLEARANCE_PX}px; box-sizing: border-box;}}")


class PhotoRejected(ValueError):
    """An upload the page cannot age; the message is shown to the person."""


def private_temp_dir() -> str:
    """A fresh folder for Gradio's files: in RAM (/dev/shm) where the machine has it."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="ipcgan_serve_", dir=base)


def import_gradio(temp_dir: str) -> Any:
    """Gradio, set up to keep its files in `temp_dir` and to send nothing anywhere.

    Gradio reads these variables when it is imported and when a page is built, so they
    are set first."""
    os.environ.update(GRADIO_ENVIRONMENT, GRADIO_TEMP_DIR=temp_dir)
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"the web page needs Gradio ({GRADIO_REQUIREMENT}): pip install -e \".[serve]\" "
                          f"or pip install -r requirements-serve.txt ({error})") from None
    return gradio


def parse_ages(text: str | None) -> tuple[float, ...]:
    """'25 37, 60' -> (25.0, 37.0, 60.0); PhotoRejected with the rule otherwise."""
    words = str(text or "").replace(",", " ").split()
    try:
        ages = continuous_age.check_requested_ages([float(word) for word in words])
    except ValueError:
        raise PhotoRejected(f"Type one or more ages in years between {MIN_AGE} and {MAX_REQUESTED_AGE}, "
                            f"separated by spaces (got {text!r}).") from None
    if len(ages) > MAX_AGES:
        raise PhotoRejected(f"Type at most {MAX_AGES} ages (got {len(ages)}).")
    return ages


def parse_animation(frames: Any, duration_s: Any) -> tuple[tuple[float, ...], int]:
    """(frame ages, ms per frame) of an animation of `frames` lasting `duration_s` seconds,
    within FRAMES_RANGE and DURATION_RANGE_S; PhotoRejected otherwise."""
    try:
        frames, duration_s = float(frames), float(duration_s)
    except (TypeError, ValueError):
        frames = duration_s = math.nan
    if not (FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1] and frames == int(frames)):  # NaN fails the range
        raise PhotoRejected(f"The animation takes {FRAMES_RANGE[0]} to {FRAMES_RANGE[1]} frames.")
    if not DURATION_RANGE_S[0] <= duration_s <= DURATION_RANGE_S[1]:  # NaN fails too
        raise PhotoRejected(f"The animation lasts {DURATION_RANGE_S[0]:g} to {DURATION_RANGE_S[1]:g} seconds.")
    return continuous_age.progression_ages(int(frames)), age.frame_ms(int(frames), duration_s)


def read_photo(path: str, max_megapixels: float) -> np.ndarray:
    """The uploaded file as RGB pixels; PhotoRejected for non-images and huge images
    (the size is read from the header before anything is decoded)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise PhotoRejected("That file is not an image this page can read (use a JPEG, PNG or WebP photo).") from None
    if width * height > max_megapixels * 1e6:
        raise PhotoRejected(f"That image is too large ({width} x {height} pixels); the limit is "
                            f"{max_megapixels:g} megapixels. Please use a smaller photo.")
    try:
        return read_image(path)
    except ImageReadError as error:
        raise PhotoRejected(f"That image could not be read: {error.reason}.") from None


class AgeingPage:
    """The page's work, without the page: photo + settings -> grid, animation, strip."""

    def __init__(self, ager: inference.FaceAger, temp_dir: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
        self.ager = ager
        self.temp_dir = temp_dir
        self.max_megapixels = float(max_megapixels)

    def uploaded_path(self, photo: Any) -> str | None:
        """The path in Gradio's file record of an upload (None when there is none); an
        upload lives in this page's temp folder, and any other path a client names is
        refused: the server's other files are not the client's to age."""
        path = photo.get("path") if isinstance(photo, dict) else getattr(photo, "path", None)
        if not path:
            return None
        if not age.is_inside(str(path), self.temp_dir):
            raise PhotoRejected("That file was not uploaded to this page.")
        return os.path.realpath(str(path))

    def run(self, photo_path: str | None, ages_text: str | None, animate: bool, frames: Any, duration_s: Any,
            whole_photo: bool) -> tuple[np.ndarray, str | None, np.ndarray | None, str]:
        """(grid, animation file or None, frame strip or None, a line about what was done)."""
        if not photo_path:
            raise PhotoRejected("Upload a photo, or take one with the camera, first.")
        ages = parse_ages(ages_text)
        if animate:
            frame_ages, animation_ms = parse_animation(frames, duration_s)
        pixels = read_photo(photo_path, self.max_megapixels)
        try:
            face = self.ager.age_faces(pixels, ages=ages)[0]
        except (inference.FaceNotFoundError, inference.FaceTooSmallError) as error:
            reason = str(error).split(" (")[0]
            raise PhotoRejected(f"{reason[0].upper()}{reason[1:]}: please use a photo with a clear, frontal "
                                f"face at least {self.ager.min_face_size} pixels wide.") from None
        labels = [continuous_age.age_label(a) for a in ages]
        grid = visualization.make_grid([[face.generator_input] + list(face.outputs)],
                                       column_titles=["input"] + labels)
        message = f"Aged the largest face to {', '.join(labels)}"
        if not animate:
            return grid, None, None, message + "."
        progression = self.ager.reage(face, ages=frame_ages)
        movie = self.whole_photo_frames(progression, pixels) if whole_photo else progression.outputs
        path = os.path.join(self.temp_dir, f"ageing_{uuid.uuid4().hex}.webp")
        visualization.write_new_file(path, visualization.animation_bytes(movie, frame_ms=animation_ms))
        strip = age.progression_strip(progression)
        return grid, path, strip, message + f", and animated {len(frame_ages)} frames from 11-20 to 51+."

    @staticmethod
    def whole_photo_frames(progression: inference.AgedFace, pixels: np.ndarray) -> list[np.ndarray]:
        """Each frame pasted into the photo, one at a time, at most MAX_ANIMATION_SIDE pixels long."""
        height, width = pixels.shape[:2]
        scale = min(1.0, MAX_ANIMATION_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = []
        for k in range(len(progression.outputs)):
            one = dataclasses.replace(progression, outputs=progression.outputs[k:k + 1]).paste_back(pixels)[0]
            frames.append(one if scale == 1.0 else np.asarray(Image.fromarray(one).resize(size, Image.LANCZOS)))
        return frames


def build_page(page: AgeingPage, gradio: Any, *, keep_minutes: float = DEFAULT_KEEP_MINUTES,
               queue_size: int = DEFAULT_QUEUE_SIZE) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    gr = gradio
    keep_s = max(60, int(keep_minutes * 60))

    def run(photo, ages_text, animate, frames, duration_s, whole_photo):
        # The inputs arrive as the client sent them (preprocess=False below: a file that is
        # not an image reaches read_photo and its clear message), so the page checks each
        # itself, the sliders' ranges included.
        try:
            return page.run(page.uploaded_path(photo), ages_text, bool(animate), frames, duration_s,
                            bool(whole_photo))
        except PhotoRejected as error:
            # One line in the server's log, not Gradio's traceback: the refusal is expected.
            print(f"refused a request: {error}", file=sys.stderr)
            raise gr.Error(str(error), title="Cannot age this photo", print_exception=False) from None

    with gr.Blocks(title="IPCGAN face ageing", analytics_enabled=False, delete_cache=(keep_s, keep_s)) as blocks:
        gr.Markdown("## Face ageing (IPCGAN)\nUpload a photo with a face, or take one with the camera. "
                    f"Ages are in years ({MIN_AGE}-{MAX_REQUESTED_AGE}); ages between the five groups "
                    "11-20 ... 51+ blend the two nearest groups. Photos are aged in memory; the uploaded file and the "
                    f"results are deleted after {keep_s // 60} minutes and when the server stops.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(label="Photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 image_mode=None, elem_id="photo")
                ages = gr.Textbox(value=DEFAULT_AGES, label="Ages in years", elem_id="ages")
                animate = gr.Checkbox(value=True, label="Ageing animation (11-20 to 51+)", elem_id="animate")
                with gr.Row():
                    frames = gr.Slider(*FRAMES_RANGE, value=age.DEFAULT_FRAMES, step=1, label="Frames",
                                       elem_id="frames")
                    duration = gr.Slider(*DURATION_RANGE_S, value=age.DEFAULT_DURATION_S, step=0.5,
                                         label="Duration (seconds)", elem_id="duration")
                whole_photo = gr.Checkbox(value=False, label="Animate the whole photo (face pasted back)",
                                          elem_id="whole_photo")
                button = gr.Button("Age", variant="primary", elem_id="age_button")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                grid = gr.Image(label="Aged faces", format="png", interactive=False, buttons=["download"],
                                height=200, elem_id="grid")
                animation = gr.Image(label="Ageing animation", type="filepath", interactive=False,
                                     buttons=["download"], height=280, elem_id="animation")
                strip = gr.Image(label="Animation frames", format="png", interactive=False, buttons=["download"],
                                 height=120, elem_id="strip")
        button.click(run, [photo, ages, animate, frames, duration, whole_photo], [grid, animation, strip, status],
                     concurrency_limit=1, preprocess=False, api_name="age")
    blocks.queue(max_size=int(queue_size), default_concurrency_limit=1)
    return blocks


def launch(blocks: Any, gradio: Any, *, host: str, port: int, max_upload_mb: float,
           block: bool = True) -> Any:
    """Serves the page (no share link, no SSR node server, no web fonts)."""
    theme = gradio.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
    return blocks.launch(server_name=host, server_port=int(port), share=False, inbrowser=False,
                         prevent_thread_lock=not block, max_file_size=int(max_upload_mb * 1024 * 1024),
                         show_error=True,
                         ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, quiet=not block,
                         theme=theme, css=RESULT_CSS, footer_links=[])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ipcgan_jax.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workdir", help="a GAN run's workdir (its latest checkpoint); default: the "
                        f"real-face generator shipped with the package ({inference.DEFAULT_PRETRAINED})")
    source.add_argument("--checkpoint", help="a WORKDIR/checkpoints/<step> folder or an exported generator")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload accepted, in MB (default {DEFAULT_MAX_UPLOAD_MB})")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help=f"largest photo accepted, in megapixels (default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--keep-minutes", type=float, default=DEFAULT_KEEP_MINUTES,
                        help=f"delete uploads and results older than this (default {DEFAULT_KEEP_MINUTES})")
    parser.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE,
                        help=f"requests that may wait (default {DEFAULT_QUEUE_SIZE})")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    for name, value, least in (("--max-upload-mb", args.max_upload_mb, 0.001), ("--max-megapixels",
                               args.max_megapixels, 0.001), ("--keep-minutes", args.keep_minutes, 1.0),
                               ("--queue-size", args.queue_size, 1)):
        if not (math.isfinite(value) and value >= least):
            parser.error(f"{name} must be a number of at least {least:g}, got {value}")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # Gradio stops serving on it, and main's cleanup runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    temp_dir = private_temp_dir()
    try:
        try:
            if args.workdir or args.checkpoint:
                ager = inference.FaceAger.from_checkpoint(args.workdir or args.checkpoint)
            else:
                ager = inference.FaceAger.from_pretrained()
        except (checkpointing.CheckpointError, FileNotFoundError) as error:  # not a model: say so, no traceback
            print(f"error: {error}", file=sys.stderr)
            return 2
        gradio = import_gradio(temp_dir)
        if ager.trained_on_synthetic_faces:
            print(f"note: {ager.loaded.source} was trained on the built-in synthetic faces: on photos it draws "
                  "noise (leave out --workdir/--checkpoint for the shipped real-face model)", file=sys.stderr)
        blocks = build_page(AgeingPage(ager, temp_dir, args.max_megapixels), gradio,
                            keep_minutes=args.keep_minutes, queue_size=args.queue_size)
        print(f"model: {ager.loaded.source}; files in {temp_dir} (removed on exit)", file=sys.stderr)
        try:
            launch(blocks, gradio, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
        except OSError as error:  # the port taken, an address this machine does not have, ...
            print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
            return 2
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
