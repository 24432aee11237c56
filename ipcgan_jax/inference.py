"""Ageing faces with a trained generator: `FaceAger`, for notebooks and `python -m ipcgan_jax.age`.

    ager = FaceAger.from_checkpoint("workdirs/demo")        # a run's workdir, a step
    outputs = ager.age("me.jpg")                             # folder, or a converted export
    # uint8 (num_groups, S, S, 3): the largest face at every age group (11-20 ... 51+)
    outputs = ager.age("me.jpg", age=[25, 37, 60])           # ages in years: blends of the
                                                             # two nearest groups (age_condition)

A photo goes through the same code as the datasets: dlib detection and 5-point
alignment (`ipcgan_jax.data.alignment.FaceAligner`) to the crop layout the run was
trained on (400x400 for CACD-built data, the renderer's layout and size for the
synthetic faces), then the generator-input scaling of docs/faithfulness.md §8 (TF1
bilinear resize to the run's image size, minus the Caffe mean).

BatchNorm at inference (docs/faithfulness.md §4, §12). The original test script ran G in
training mode and batched every test face with 31 training faces, so a face's output
depended on its batch neighbours; and its 12 residual-block BNs use batch statistics even in test mode.
Here every (face, age group) pair is its own batch of one (vectorised with `jax.vmap`,
so pairs never share statistics): an output depends only on its face and group, never
on what else is being aged. Two BN modes remain, selected by `bn_mode`:

- "moving" (default): every BN, residual blocks included, uses its moving averages.
  The trainer tracks those averages in the residual blocks too (they update whenever G
  runs in training mode), so G becomes a fixed function of its input. Chosen because it
  reproduced the ground-truth aged faces of the synthetic data better than "single"
  (README, "Ageing your own photos": the measurement and its numbers).
- "single": the faithful quirk: test-mode BNs use moving averages, but the residual
  BNs normalise with the statistics of this one image (an instance norm over H, W).
  Needed for checkpoints whose residual moving averages were never updated (the
  default picks it automatically then).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ipcgan_jax import checkpointing, gan, preprocessing
from ipcgan_jax.constants import AGE_GROUP_LABELS, BN_MODES, CAFFE_MEAN_BGR, GENERATOR_WEIGHTS, NUM_AGE_GROUPS
from ipcgan_jax.continuous_age import age_condition, check_requested_ages
from ipcgan_jax.data import alignment, framing
from ipcgan_jax.data.images import as_rgb_uint8
from ipcgan_jax.models import Generator
from ipcgan_jax.models.layers import TFBatchNorm

PyTree = Any
BnMode = Literal["moving", "single"]
DEFAULT_BN_MODE: BnMode = "moving"
DEFAULT_MIN_FACE_SIZE = 40
# Pairs per compiled call: a fixed size, so one compilation serves any number of faces.
_PAIRS_PER_CALL = 8


class NotAGeneratorError(checkpointing.CheckpointError):
    """A path given as a generator is none: missing, or not a GAN run, a checkpoint of one
    or an exported generator (the message says which)."""


class FaceNotFoundError(ValueError):
    """No face was detected in an image."""


class FaceTooSmallError(ValueError):
    """The face found is too small to age (its detector box is below `min_face_size`)."""


# ----------------------------------------------------------------------------- loading
# The generators shipped inside the package (ipcgan_jax/pretrained/<name>, written by
# `python -m ipcgan_jax.export`), and the one the photo tool uses by default.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
DEFAULT_PRETRAINED = "utkface_cpu"
# Metadata key of an exported generator that holds its GAN run's config.
RUN_CONFIG_KEY = "run_config"
SYNTHETIC_DATA = ("synthetic", "synthetic_aging")
@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
    """A generator ready to run: module, variables and what it was trained on."""

    generator: Generator
    variables: PyTree
    image_size: int
    alignment: framing.AlignmentSettings
    source: str
    step: int | None
    run_config: ml_collections.ConfigDict | None
    # 'average' when the variables are the run's moving average of G's weights, else 'live'.
    weights: str = "live"


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """WORKDIR/config.json (written by the trainer) as a ConfigDict."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise NotAGeneratorError(f"{path} not found: {workdir} is not a GAN run's workdir, nor an exported "
                                 "generator (no variables/ folder)")
    return ml_collections.ConfigDict(checkpointing.read_json_object(path))


def _generator_from_params(params: PyTree) -> Generator:
    """The Generator whose shapes match exported params (e.g. converted original weights)."""
    conv1 = np.shape(params["conv1"]["kernel"])
    num_res_blocks = sum(1 for name in params if name.startswith("unit_"))
    return Generator(base_features=conv1[-1], num_res_blocks=num_res_blocks, num_groups=conv1[2] - 3)


def load_generator(path: str, *, step: int | None = None, image_size: int | None = None,
                   weights: str = "average") -> LoadedGenerator:
    """A trained generator from a run's workdir, one of its `checkpoints/<step>` folders,
    or an exported generator (`python -m ipcgan_jax.export` writes one with its run's
    config; `python -m ipcgan_jax.convert` writes OUT/generator from original weights).

    step: for a workdir, which checkpoint (None: the latest). image_size: for exports
    without a run config, the generator resolution (default 128, the paper's). weights:
    for a run that kept a moving average of G's weights (`generator_ema_decay`), 'average'
    reads it and 'live' the weights themselves; an export holds the one it was written with.
    """
    if weights not in GENERATOR_WEIGHTS:
        raise ValueError(f"weights must be one of {GENERATOR_WEIGHTS}, got {weights!r}")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise NotAGeneratorError(f"{path} does not exist")
    if os.path.isdir(os.path.join(path, checkpointing.VARIABLES_DIR)):
        variables, metadata = checkpointing.load_variables(path)
        if ("params" not in variables or "batch_stats" not in variables or "conv1" not in variables["params"]
                or metadata.get("network", "generator") != "generator"):
            raise NotAGeneratorError(
                f"{path} is not an exported generator (needs a generator's params and batch_stats; "
                f"metadata says network={metadata.get('network')!r})")
        if RUN_CONFIG_KEY in metadata:  # exported from a run: its settings travel with it
            config = ml_collections.ConfigDict(metadata[RUN_CONFIG_KEY])
            return LoadedGenerator(gan.build_generator(config), variables, image_size or int(config.data.image_size),
                                   framing.alignment_for_data(config.data), path, metadata.get("step"), config,
                                   metadata.get("generator_weights", "live"))
        generator = _generator_from_params(variables["params"])
        return LoadedGenerator(generator, variables, image_size or 128, framing.AlignmentSettings(), path, None, None)
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "checkpoints" and os.path.basename(path).isdigit():
        workdir, step = os.path.dirname(parent), int(os.path.basename(path))
    else:
        workdir = path
    config = read_run_config(workdir)
    if config.get("task") != "gan":
        raise NotAGeneratorError(f"{workdir} holds a {config.get('task')!r} run, not a GAN run")
    state, _, step = checkpointing.restore_state_tree(os.path.join(workdir, "checkpoints"), step)
    average = state.get("g_ema_params") if weights == "average" else None
    used = "live" if average is None else "average"
    variables = {"params": state["g_params"] if average is None else average, "batch_stats": state["g_batch_stats"]}
    return LoadedGenerator(gan.build_generator(config), variables, int(config.data.image_size),
                           framing.alignment_for_data(config.data), workdir, step, config, used)


# ----------------------------------------------------------------------------- BN modes
def _residual_bns_use_moving_stats(next_fun, args, kwargs, context):
    """Flax interceptor: a test-mode residual BN normalises with its moving averages.

    The Generator hard-wires those BNs to batch statistics (the faithful quirk); this
    re-runs the same BN module with the quirk off on the same variables."""
    module = context.module
    if (isinstance(module, TFBatchNorm) and module.always_batch_stats
            and context.method_name == "__call__"):
        x, train = args[0], args[1] if len(args) > 1 else kwargs["train"]
        if not train:
            return module.clone(parent=None, always_batch_stats=False).apply(module.variables, x, False)
    return next_fun(*args, **kwargs)


def residual_moving_stats_available(batch_stats: PyTree) -> bool:
    """Whether every residual-block BN has moving averages (num_updates > 0)."""
    updates = [float(np.asarray(bn["num_updates"])) for name, unit in batch_stats.items()
               if name.startswith("unit_") for bn in unit.values()]
    return bool(updates) and min(updates) > 0


def make_generate_pairs(generator: Generator, bn_mode: BnMode):
    """`generate(variables, g_inputs (P,S,S,3), conditions (P, num_groups)) -> (P,S,S,3)`
    in [-1, 1]; a condition row is a group's one-hot row or a blend (`age_condition`).

    Every pair runs as its own batch of one under `jax.vmap`, so no statistic is ever
    shared between pairs (module docstring)."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")

    def one(variables: PyTree, g_input: jax.Array, condition: jax.Array) -> jax.Array:
        return generator.apply(variables, g_input[None], condition[None], train=False)[0]

    def generate(variables: PyTree, g_inputs: jax.Array, conditions: jax.Array) -> jax.Array:
        run = jax.vmap(one, in_axes=(None, 0, 0))
        if bn_mode == "moving":
            with nn.intercept_methods(_residual_bns_use_moving_stats):
                return run(variables, g_inputs, conditions)
        return run(variables, g_inputs, conditions)

    return generate


@dataclasses.dataclass(frozen=True)
class AgedFace:
    """One face aged to several groups, or to several ages in years.

    aligned: (A, A, 3) uint8 aligned crop; generator_input: (S, S, 3) uint8, the crop as
    G sees it (resized); outputs: (len(age_groups), S, S, 3) uint8, or one per age of
    `ages` when the face was aged to ages in years (age_groups is then empty);
    transform: original -> aligned pixels (None for crops given already aligned); box:
    detector box or None.
    """

    aligned: np.ndarray
    generator_input: np.ndarray
    outputs: np.ndarray
    age_groups: tuple[int, ...]
    transform: np.ndarray | None
    box: np.ndarray | None
    ages: tuple[float, ...] = ()

    def paste_back(self, original: np.ndarray) -> np.ndarray:
        """(len(outputs), H, W, 3): the original photo with each aged face pasted in."""
        if self.transform is None:
            raise ValueError("this face was given already aligned: there is no photo to paste it into")
        return np.stack([alignment.paste_back(original, output, self.transform,
                                              aligned_size=self.aligned.shape[0])
                         for output in self.outputs])


class FaceAger:
    """Ages faces with a trained generator (module docstring: alignment and BN modes).

    Args:
      loaded: a `LoadedGenerator` (see `FaceAger.from_checkpoint`).
      bn_mode: "moving" or "single"; None: "moving" when the checkpoint has residual
        moving averages, else "single".
      min_face_size: faces whose detector box is narrower than this (pixels) are refused.
      upsample: dlib detector upsampling (1 finds faces down to about 40 px).
      aligner: a prepared `FaceAligner` (e.g. with stand-in detectors); None builds dlib's
        on first use with the run's crop layout.
    """

    def __init__(self, loaded: LoadedGenerator, *, bn_mode: BnMode | None = None,
                 min_face_size: int = DEFAULT_MIN_FACE_SIZE, upsample: int = 1,
                 aligner: alignment.FaceAligner | None = None):
        has_moving = residual_moving_stats_available(loaded.variables["batch_stats"])
        if bn_mode is None:
            bn_mode = DEFAULT_BN_MODE if has_moving else "single"
        if bn_mode == "moving" and not has_moving:
            raise ValueError(f"{loaded.source}: the residual-block BNs have no moving averages "
                             "(never updated); use bn_mode='single'")
        self.loaded = loaded
        self.bn_mode: BnMode = bn_mode
        self.min_face_size = int(min_face_size)
        self.upsample = int(upsample)
        self._aligner = aligner
        self._variables = jax.tree.map(jnp.asarray, loaded.variables)
        self._generate = jax.jit(make_generate_pairs(loaded.generator, bn_mode))

    @classmethod
    def from_checkpoint(cls, path: str, *, step: int | None = None, image_size: int | None = None,
                        aligned_size: int | None = None, **kwargs) -> "FaceAger":
        """From a workdir, a `checkpoints/<step>` folder or an exported generator
        (`load_generator`); aligned_size overrides the crop side (keeping its layout);
        other keyword arguments go to `FaceAger`."""
        loaded = load_generator(path, step=step, image_size=image_size)
        if aligned_size is not None:
            loaded = dataclasses.replace(
                loaded, alignment=dataclasses.replace(loaded.alignment, output_size=int(aligned_size)))
        return cls(loaded, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_PRETRAINED, **kwargs) -> "FaceAger":
        """A generator shipped with the package (`PRETRAINED_DIR`/name; the default ages
        real photos: README, "Real faces"); keyword arguments as `from_checkpoint`."""
        path = os.path.join(PRETRAINED_DIR, name)
        if not os.path.isdir(path):
            shipped = sorted(os.listdir(PRETRAINED_DIR)) if os.path.isdir(PRETRAINED_DIR) else []
            raise FileNotFoundError(f"no shipped generator {name!r}; shipped: {shipped}")
        return cls.from_checkpoint(path, **kwargs)

    @property
    def trained_on_synthetic_faces(self) -> bool:
        """Whether the generator learned from the built-in drawn faces (not real photos)."""
        config = self.loaded.run_config
        return config is not None and config.data.name in SYNTHETIC_DATA

    @property
    def num_groups(self) -> int:
        return self.loaded.generator.num_groups

    @property
    def image_size(self) -> int:
        return self.loaded.image_size

    def group_labels(self, age_groups: Sequence[int] | None = None) -> list[str]:
        groups = self.resolve_groups(age_groups)
        labels = AGE_GROUP_LABELS if self.num_groups == NUM_AGE_GROUPS else None
        return [labels[g] if labels else f"group {g}" for g in groups]

    @property
    def aligner(self) -> alignment.FaceAligner:
        if self._aligner is None:
            settings = self.loaded.alignment
            self._aligner = alignment.FaceAligner(
                output_size=settings.output_size, padding=settings.padding,
                vertical_shift=settings.vertical_shift, upsample=self.upsample, template=settings.template)
        return self._aligner

    def resolve_groups(self, age_groups: Sequence[int] | None) -> tuple[int, ...]:
        """`age_groups` checked against the model (None: every group)."""
        if age_groups is None:
            return tuple(range(self.num_groups))
        groups = tuple(int(g) for g in np.atleast_1d(age_groups))
        bad = [g for g in groups if not 0 <= g < self.num_groups]
        if bad or not groups:
            raise ValueError(f"age groups must be a non-empty list in 0..{self.num_groups - 1}, got {groups}")
        return groups

    # ------------------------------------------------------------------ generation
    def to_generator_input(self, crops: np.ndarray) -> np.ndarray:
        """(N, A, A, 3) uint8 crops -> (N, S, S, 3) float32 G input (docs/faithfulness.md §8)."""
        return np.asarray(preprocessing.pixels_to_generator_input(
            jnp.asarray(crops, jnp.float32), self.image_size))

    def age_aligned(self, crops: np.ndarray, age_groups: Sequence[int] | None = None) -> np.ndarray:
        """(N, A, A, 3) uint8 aligned crops (any square size) -> (N, G, S, S, 3) uint8.

        Each (face, group) pair is computed on its own: the result for a face is the
        same whatever other faces are passed along with it."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != 3:
            raise ValueError(f"aligned crops must be (N, A, A, 3), got {crops.shape}")
        return self.age_generator_inputs(self.to_generator_input(crops), self.resolve_groups(age_groups))

    def age_generator_inputs(self, g_inputs: np.ndarray, groups: Sequence[int]) -> np.ndarray:
        """(N, S, S, 3) G inputs (`to_generator_input`) -> (N, len(groups), S, S, 3) uint8."""
        groups = self.resolve_groups(groups)
        return self.generate(g_inputs, np.eye(self.num_groups, dtype=np.float32)[list(groups)])

    def age_generator_inputs_to_ages(self, g_inputs: np.ndarray, ages: float | Sequence[float]) -> np.ndarray:
        """(N, S, S, 3) G inputs -> (N, len(ages), S, S, 3) uint8 at ages in years (`age_condition`)."""
        if self.num_groups != NUM_AGE_GROUPS:
            raise ValueError(f"ages in years need a generator of the {NUM_AGE_GROUPS} age groups "
                             f"{AGE_GROUP_LABELS}; {self.loaded.source} has {self.num_groups}")
        return self.generate(g_inputs, age_condition(ages))

    def generate(self, g_inputs: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) G inputs and (C, num_groups) condition rows (one-hot or blended)
        -> (N, C, S, S, 3) uint8: every face under every condition, each pair on its own."""
        conditions = np.asarray(conditions, np.float32)
        face_index = np.repeat(np.arange(len(g_inputs)), len(conditions))
        pair_conditions = np.tile(conditions, (len(g_inputs), 1))
        outputs = np.empty((len(face_index), self.image_size, self.image_size, 3), np.uint8)
        for start in range(0, len(face_index), _PAIRS_PER_CALL):
            rows = np.arange(start, min(start + _PAIRS_PER_CALL, len(face_index)))
            padded = np.resize(rows, _PAIRS_PER_CALL)  # repeats rows to a fixed shape
            generated = self._generate(self._variables, g_inputs[face_index[padded]], pair_conditions[padded])
            outputs[rows] = np.asarray(preprocessing.generator_output_to_pixels(generated))[:len(rows)]
        return outputs.reshape(len(g_inputs), len(conditions), self.image_size, self.image_size, 3)

    def age_faces(self, image: np.ndarray | str | os.PathLike, age_groups: Sequence[int] | None = None,
                  *, all_faces: bool = False, ages: float | Sequence[float] | None = None) -> list[AgedFace]:
        """Detects, aligns and ages the largest face (or every face, largest first) to
        `age_groups` (None: every group), or to `ages` in years (`age_condition`).

        Raises FaceNotFoundError, or FaceTooSmallError when the chosen face (or, with
        all_faces, every face) is narrower than `min_face_size`; the message names the
        file when `image` is a path."""
        name = f" in {os.fspath(image)!r}" if isinstance(image, (str, os.PathLike)) else ""
        groups, ages = self._groups_or_ages(age_groups, ages)
        pixels = as_rgb_uint8(image)
        faces = sorted(self.aligner.detect(pixels), key=lambda f: -f.area)
        if not faces:
            raise FaceNotFoundError(f"no face found{name}")
        widths = [min(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in faces]
        big_enough = [f for f, w in zip(faces, widths) if w >= self.min_face_size]
        chosen = big_enough if all_faces else big_enough[:1] if widths[0] >= self.min_face_size else []
        if not chosen:
            raise FaceTooSmallError(
                f"face too small{name}: {widths[0]:.0f} px wide, need at least {self.min_face_size} px "
                f"(a smaller face has too few pixels to age; use a larger photo or lower min_face_size)")
        size = self.aligner.output_size
        transforms = [self.aligner.transform_for(f.landmarks) for f in chosen]
        crops = np.stack([alignment.warp_affine(pixels, t, (size, size)) for t in transforms])
        g_inputs = self.to_generator_input(crops)
        outputs = (self.age_generator_inputs_to_ages(g_inputs, ages) if ages
                   else self.age_generator_inputs(g_inputs, groups))
        return [AgedFace(crop, generator_input_pixels(g_input), out, groups, t, f.box, ages)
                for crop, g_input, out, t, f in zip(crops, g_inputs, outputs, transforms, chosen)]

    def reage(self, face: AgedFace, age_groups: Sequence[int] | None = None, *,
              ages: float | Sequence[float] | None = None) -> AgedFace:
        """`face` (from `age_faces`) aged to other groups or ages, without detecting and
        aligning again: the same crop gives the same outputs as `age_faces` would."""
        groups, ages = self._groups_or_ages(age_groups, ages)
        g_inputs = self.to_generator_input(face.aligned[None])
        outputs = (self.age_generator_inputs_to_ages(g_inputs, ages) if ages
                   else self.age_generator_inputs(g_inputs, groups))
        return dataclasses.replace(face, outputs=outputs[0], age_groups=groups, ages=ages)

    def _groups_or_ages(self, age_groups: Sequence[int] | None,
                        ages: float | Sequence[float] | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(groups, ()) or ((), ages): the one kind of target asked for, checked."""
        if ages is None:
            return self.resolve_groups(age_groups), ()
        if age_groups is not None:
            raise ValueError("give either age_groups or ages in years, not both")
        return (), check_requested_ages(ages)

    def age(self, image: np.ndarray | str | os.PathLike, age_groups: Sequence[int] | None = None,
            *, align: bool = True, age: float | Sequence[float] | None = None) -> np.ndarray:
        """(len(age_groups), S, S, 3) uint8: the largest face of `image` at each group;
        with `age` (years, one or several: `age=37`, `age=[25, 37, 60]`), (len(ages), S,
        S, 3) at those ages (`age_condition`: blends of the two nearest groups).

        image: a path or an array (uint8 RGB, grayscale or RGBA). align=False: `image`
        is already an aligned crop in the run's layout (centre-cropped to a square)."""
        if align:
            return self.age_faces(image, age_groups, ages=age)[0].outputs
        groups, ages = self._groups_or_ages(age_groups, age)
        crop = alignment.crop_and_resize(as_rgb_uint8(image), self.aligner_size)
        g_inputs = self.to_generator_input(crop[None])
        if ages:
            return self.age_generator_inputs_to_ages(g_inputs, ages)[0]
        return self.age_generator_inputs(g_inputs, groups)[0]

    @property
    def aligner_size(self) -> int:
        return self.loaded.alignment.output_size


def generator_input_pixels(g_input: np.ndarray) -> np.ndarray:
    """G input (mean subtracted) -> the uint8 picture it shows, for grids."""
    return np.clip(np.rint(np.asarray(g_input) + np.asarray(CAFFE_MEAN_BGR)), 0, 255).astype(np.uint8)
