"""Import of the original IPCGAN weights into this project's Flax variables (SPEC §4).

Two source formats:
- `bvlc_alexnet.npy` (ImageNet AlexNet, a pickled dict name -> [weights, biases]):
  `load_bvlc_alexnet` returns the trunk params conv1..conv5, fc6, fc7 (fc8 is ignored and
  logged).
- TF1 checkpoints of the official code (`acgan.model-*`, `pre_trained/alexnet.model-*`,
  `pre_trained/age_classifier.model-*`): `load_tf1_checkpoint` maps them by name and shape
  onto variable templates (see the `*_variables_template` functions), one per network:

  | network          | TF scope                          | Flax variables            |
  |------------------|-----------------------------------|---------------------------|
  | generator        | generator/                        | params, batch_stats       |
  | discriminator    | discriminator/                    | params, batch_stats       |
  | alexnet          | alexnet/ conv1..5, fc6, fc7, new_1, new_2 | params            |
  | age_classifier   | alexnet/age_fc6..8 or age_fc6..8  | params (age_fc6..8 only)  |

  Names: `weights` -> kernel (conv, dense and the [3,3,out,in] deconv kernels, unchanged),
  `biases` -> bias, BN `gamma` -> scale, `beta` -> bias, `moving_mean` -> mean,
  `moving_variance` -> var; the residual blocks' `unit_<i>/sub1/{conv1,bn1}` and
  `unit_<i>/sub2/{conv2,bn2}` -> `unit_<i>/{conv1,bn1,conv2,bn2}`. The zero-debias shadows
  of TF1's moving averages, `<bn>/<bn>/moving_mean/biased`, `.../moving_variance/biased`
  and `.../local_step`, -> biased_mean, biased_var, num_updates.

  A BN without shadows (a checkpoint written by other code) keeps its mean and var, and
  gets biased_* = mean/var and num_updates = `STEADY_STATE_UPDATES`: with 0.9**1000 == 0
  in float32 the zero-debias factor is exactly 1, so later updates continue as a plain
  decay-0.9 moving average from the imported statistics (what TF1's debiased average is
  after many steps) instead of restarting from zero.

  TF1 bookkeeping is ignored and counted: `global_step`, optimizer slots (`.../Adam`,
  `.../Adam_1`), `beta1_power`, `beta2_power`, and shadows of networks not requested.
  Variables of a known network that was not requested (say `discriminator/` when only
  the generator is loaded) are skipped and counted too. Anything else that does not match
  raises `CheckpointMismatchError` listing the missing, unexpected and mis-shaped names.

TensorFlow is needed only to read TF1 checkpoints; it is imported lazily, inside
`ipcgan_jax.data.tf1_checkpoint`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ipcgan_jax.models import AlexNet, Discriminator, Generator

logger = logging.getLogger(__name__)

NETWORKS = ("generator", "discriminator", "alexnet", "age_classifier")
AGE_LAYERS = ("age_fc6", "age_fc7", "age_fc8")
BVLC_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
STEADY_STATE_UPDATES = 1000.0

Variables = dict[str, Any]

_BOOKKEEPING = re.compile(
    r"^(global_step|beta[12]_power(_\d+)?)$|/Adam(_\d+)?$"
    r"|^(?P<bn>.+)/(?P=bn)/moving_(mean|variance)/(biased|local_step)$")
_RESIDUAL_LAYER = re.compile(r"^(unit_\d+)/((conv|bn)([12]))$")


class CheckpointMismatchError(ValueError):
    """A checkpoint's variables do not match the networks' variables by name and shape."""


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What `load_tf1_checkpoint` did besides loading.

    ignored: TF1 bookkeeping names (global_step, Adam slots, beta powers, unused shadows).
    skipped: names of known networks that were not requested.
    steady_state_batch_norms: BN layers without zero-debias shadows (see module doc).
    """

    checkpoint: str
    loaded: int
    ignored: tuple[str, ...]
    skipped: tuple[str, ...]
    steady_state_batch_norms: tuple[str, ...]

    @property
    def num_ignored(self) -> int:
        return len(self.ignored)


# ----------------------------------------------------------------------------- templates
def _shape_template(module: Any, *args: Any, **kwargs: Any) -> Variables:
    # eval_shape: shapes only, nothing allocated (the faithful AlexNet has 100M+ params)
    return dict(jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs)))


def generator_variables_template(generator: Generator | None = None,
                                 image_size: int = 128) -> Variables:
    """Shapes of the generator's variables (params, batch_stats), faithful by default."""
    generator = generator or Generator()
    return _shape_template(generator, jnp.zeros((1, image_size, image_size, 3)),
                           jnp.zeros((1,), jnp.int32), train=False)


def discriminator_variables_template(discriminator: Discriminator | None = None,
                                     image_size: int = 128) -> Variables:
    """Shapes of the discriminator's variables (params, batch_stats), faithful by default."""
    discriminator = discriminator or Discriminator()
    return _shape_template(discriminator, jnp.zeros((1, image_size, image_size, 3)),
                           jnp.zeros((1,), jnp.int32), train=False)


def alexnet_variables_template(alexnet: AlexNet | None = None, image_size: int = 227) -> Variables:
    """Shapes of the AlexNet trunk and identity head params (conv1..5, fc6, fc7, new_1, new_2)."""
    alexnet = alexnet or AlexNet()
    return _shape_template(alexnet, jnp.zeros((1, image_size, image_size, 3)),
                           outputs=("identity_logits",))


def age_classifier_variables_template(alexnet: AlexNet | None = None,
                                      image_size: int = 227) -> Variables:
    """Shapes of the age head params (age_fc6..age_fc8) that sits on the AlexNet trunk."""
    alexnet = alexnet or AlexNet()
    full = _shape_template(alexnet, jnp.zeros((1, image_size, image_size, 3)), outputs=("age_logits",))
    return {"params": {name: full["params"][name] for name in AGE_LAYERS}}


def default_variables_templates() -> dict[str, Variables]:
    """Faithful templates of all four networks, keyed as `NETWORKS`."""
    return {"generator": generator_variables_template(),
            "discriminator": discriminator_variables_template(),
            "alexnet": alexnet_variables_template(),
            "age_classifier": age_classifier_variables_template()}


# ----------------------------------------------------------------------------- bvlc npy
def load_bvlc_alexnet(path: str, *, expect: Variables | None = None) -> dict[str, Any]:
    """ImageNet AlexNet (`bvlc_alexnet.npy`) -> params {conv1..conv5, fc6, fc7}.

    The file is a pickled dict layer -> [weights, biases]; fc8 (the 1000 ImageNet
    classes) and any other layer are ignored and logged. Shapes are checked against
    `expect` (an AlexNet variables template; faithful by default); conv2/4/5 keep their
    grouped layout (k, k, in/2, out), which is Flax's `feature_group_count=2` kernel.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"bvlc AlexNet weights not found: {path}")
    try:
        layers = np.load(path, allow_pickle=True, encoding="latin1").item()
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a pickled numpy dict of AlexNet layers: {error}") from error
    if not isinstance(layers, dict):
        raise ValueError(f"{path}: expected a dict layer -> [weights, biases], got {type(layers).__name__}")
    template = (expect or alexnet_variables_template())["params"]

    params, missing, misshaped = {}, [], []
    for layer in BVLC_LAYERS:
        if layer not in layers:
            missing.append(layer)
            continue
        arrays = [np.asarray(a) for a in layers[layer]]
        # the Caffe->TF port stores [weights, biases]; tell them apart by rank as it did
        biases = [a for a in arrays if a.ndim == 1]
        weights = [a for a in arrays if a.ndim > 1]
        if len(biases) != 1 or len(weights) != 1:
            raise ValueError(f"{path}: layer {layer!r} should hold [weights, biases], "
                             f"got shapes {[a.shape for a in arrays]}")
        for leaf, array in (("kernel", weights[0]), ("bias", biases[0])):
            expected = tuple(template[layer][leaf].shape)
            if array.shape != expected:
                misshaped.append(f"{layer}/{leaf}: file {array.shape}, expected {expected}")
            params.setdefault(layer, {})[leaf] = array.astype(np.float32)
    if missing or misshaped:
        raise CheckpointMismatchError(_mismatch_message(path, missing, [], misshaped))
    ignored = sorted(set(layers) - set(BVLC_LAYERS))
    logger.info("%s: loaded %d layers, ignored %d (%s)", path, len(params), len(ignored), ", ".join(ignored))
    return params


# ----------------------------------------------------------------------------- TF1 names
def _tf_layer_name(flax_layer: str) -> str:
    match = _RESIDUAL_LAYER.match(flax_layer)
    if match:
        unit, layer, _, index = match.groups()
        return f"{unit}/sub{index}/{layer}"
    return flax_layer


def _network_scope(network: str, age_prefix: str) -> str:
    return {"generator": "generator/", "discriminator": "discriminator/",
            "alexnet": "alexnet/", "age_classifier": age_prefix}[network]


def _name_table(network: str, template: Variables, scope: str):
    """TF1 name -> (collection, flax path) for required variables, and per BN layer the
    optional shadows: bn name -> {flax leaf: [TF1 names]}."""
    required: dict[str, tuple[str, str]] = {}
    shadows: dict[str, tuple[str, dict[str, list[str]]]] = {}
    params = traverse_util.flatten_dict(template.get("params", {}), sep="/")
    layers = sorted({path.rsplit("/", 1)[0] for path in params})
    for layer in layers:
        tf_layer = scope + _tf_layer_name(layer)
        if f"{layer}/scale" in params:  # a TFBatchNorm
            required[f"{tf_layer}/gamma"] = ("params", f"{layer}/scale")
            required[f"{tf_layer}/beta"] = ("params", f"{layer}/bias")
            required[f"{tf_layer}/moving_mean"] = ("batch_stats", f"{layer}/mean")
            required[f"{tf_layer}/moving_variance"] = ("batch_stats", f"{layer}/var")
            base = f"{tf_layer}/{tf_layer}"
            shadows[tf_layer] = (layer, {
                "biased_mean": [f"{base}/moving_mean/biased"],
                "biased_var": [f"{base}/moving_variance/biased"],
                "num_updates": [f"{base}/moving_mean/local_step", f"{base}/moving_variance/local_step"]})
        else:
            required[f"{tf_layer}/weights"] = ("params", f"{layer}/kernel")
            required[f"{tf_layer}/biases"] = ("params", f"{layer}/bias")
    return required, shadows


def _known_network(name: str) -> str | None:
    top = name.split("/", 1)[0]
    if top in ("generator", "discriminator"):
        return top
    if top in AGE_LAYERS or name.startswith(tuple(f"alexnet/{a}/" for a in AGE_LAYERS)):
        return "age_classifier"
    if top == "alexnet":
        return "alexnet"
    return None


def _mismatch_message(source: str, missing: list[str], unexpected: list[str],
                      misshaped: list[str]) -> str:
    lines = [f"{source}: variables do not match the networks"]
    for title, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if names:
            lines.append(f"  {title} ({len(names)}):")
            lines.extend(f"    {n}" for n in names)
    return "\n".join(lines)


def _leaf_shape(template: Variables, collection: str, path: str) -> tuple[int, ...]:
    node = template[collection]
    for key in path.split("/"):
        node = node[key]
    return tuple(node.shape)


def load_tf1_checkpoint(path: str, *, expect: Mapping[str, Variables]
                        ) -> tuple[dict[str, Variables], ImportReport]:
    """Read an official TF1 checkpoint into Flax variables, one dict per network.

    path: checkpoint prefix (e.g. `.../acgan.model-399999`) or its directory.
    expect: network name (from `NETWORKS`) -> variables template (shapes; see the
      `*_variables_template` functions); every template leaf must be in the checkpoint.
    Returns ({network: variables as numpy float32}, report). Raises
    `CheckpointMismatchError` listing missing, unexpected and mis-shaped names.
    """
    from ipcgan_jax.data.tf1_checkpoint import list_tf1_variables, read_tf1_tensors

    unknown = set(expect) - set(NETWORKS)
    if unknown:
        raise ValueError(f"unknown networks {sorted(unknown)}; choose from {NETWORKS}")
    stored = list_tf1_variables(path)
    age_prefix = "alexnet/" if any(n.startswith("alexnet/age_fc") for n in stored) else ""

    required: dict[str, tuple[str, str, str]] = {}
    shadow_sets: dict[str, tuple[str, str, dict[str, list[str]]]] = {}
    for network, template in expect.items():
        names, shadows = _name_table(network, template, _network_scope(network, age_prefix))
        required.update({n: (network, *target) for n, target in names.items()})
        shadow_sets.update({bn: (network, layer, leaves) for bn, (layer, leaves) in shadows.items()})
    shadow_names = {n for _, _, leaves in shadow_sets.values() for ns in leaves.values() for n in ns}

    missing = sorted(n for n in required if n not in stored)
    misshaped = []
    for name, (network, collection, flax_path) in sorted(required.items()):
        expected = _leaf_shape(expect[network], collection, flax_path)
        if name in stored and stored[name] != expected:
            misshaped.append(f"{name}: checkpoint {stored[name]}, expected {expected}")
    ignored, skipped, unexpected = [], [], []
    for name in sorted(stored):
        if name in required or name in shadow_names:
            continue
        if _BOOKKEEPING.search(name):
            ignored.append(name)
        elif _known_network(name) not in (None, *expect):
            skipped.append(name)
        else:
            unexpected.append(name)
    steady_state = []
    for bn, (_, _, leaves) in sorted(shadow_sets.items()):
        present = [n for ns in leaves.values() for n in ns if n in stored]
        if not present:
            steady_state.append(bn)
        elif len(present) < sum(len(ns) for ns in leaves.values()):
            missing.extend(n for ns in leaves.values() for n in ns if n not in stored)
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(_mismatch_message(path, missing, unexpected, misshaped))

    tensors = read_tf1_tensors(path, sorted(set(required) | (shadow_names & set(stored))))
    flat: dict[str, dict[tuple[str, ...], np.ndarray]] = {network: {} for network in expect}
    for name, (network, collection, flax_path) in required.items():
        flat[network][(collection, *flax_path.split("/"))] = tensors[name].astype(np.float32)
    for bn, (network, layer, leaves) in shadow_sets.items():
        stats = flat[network]
        prefix = ("batch_stats", *layer.split("/"))
        if bn in steady_state:
            stats[(*prefix, "biased_mean")] = stats[(*prefix, "mean")].copy()
            stats[(*prefix, "biased_var")] = stats[(*prefix, "var")].copy()
            stats[(*prefix, "num_updates")] = np.asarray(STEADY_STATE_UPDATES, np.float32)
            continue
        steps = {int(tensors[n]) for n in leaves["num_updates"]}
        if len(steps) != 1:
            raise CheckpointMismatchError(
                f"{path}: {bn}: the moving mean and variance were updated a different number "
                f"of times ({sorted(steps)}); the checkpoint is inconsistent")
        stats[(*prefix, "biased_mean")] = tensors[leaves["biased_mean"][0]].astype(np.float32)
        stats[(*prefix, "biased_var")] = tensors[leaves["biased_var"][0]].astype(np.float32)
        stats[(*prefix, "num_updates")] = np.asarray(steps.pop(), np.float32)

    variables = {network: traverse_util.unflatten_dict(flat[network]) for network in expect}
    report = ImportReport(checkpoint=str(path), loaded=len(tensors), ignored=tuple(ignored),
                          skipped=tuple(skipped), steady_state_batch_norms=tuple(steady_state))
    logger.info("%s: loaded %d tensors into %s; ignored %d bookkeeping variables, skipped %d of "
                "other networks; %d BN layers without zero-debias shadows",
                path, report.loaded, ", ".join(expect), report.num_ignored, len(skipped),
                len(steady_state))
    return variables, report
