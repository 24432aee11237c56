"""The official IPCGAN's TF1 checkpoints (docs/faithfulness.md §6).

`acgan.model-*`, `pre_trained/alexnet.model-*` and `pre_trained/age_classifier.model-*`:
`load_tf1_checkpoint` maps them by name and shape onto variables templates
(`ipcgan_jax.weights.templates`), one per network:

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

TensorFlow is needed only to read the files; `ipcgan_jax.data.tf1_checkpoint` imports it
when a file is read, so importing this module does not load TensorFlow.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Mapping

import numpy as np
from flax import traverse_util

from ipcgan_jax.constants import ALEXNET_AGE_HEAD_LAYERS
from ipcgan_jax.data.tf1_checkpoint import list_tf1_variables, read_tf1_tensors
from ipcgan_jax.weights.mismatch import CheckpointMismatchError, mismatch_message
from ipcgan_jax.weights.templates import Variables

logger = logging.getLogger(__name__)

NETWORKS = ("generator", "discriminator", "alexnet", "age_classifier")
STEADY_STATE_UPDATES = 1000.0

_BOOKKEEPING = re.compile(
    r"^(global_step|beta[12]_power(_\d+)?)$|/Adam(_\d+)?$"
    r"|^(?P<bn>.+)/(?P=bn)/moving_(mean|variance)/(biased|local_step)$")
_RESIDUAL_LAYER = re.compile(r"^(unit_\d+)/((conv|bn)([12]))$")


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
    age_scopes = tuple(f"alexnet/{layer}/" for layer in ALEXNET_AGE_HEAD_LAYERS)
    if top in ALEXNET_AGE_HEAD_LAYERS or name.startswith(age_scopes):
        return "age_classifier"
    if top == "alexnet":
        return "alexnet"
    return None


def _leaf_shape(template: Variables, collection: str, path: str) -> tuple[int, ...]:
    node = template[collection]
    for key in path.split("/"):
        node = node[key]
    return tuple(node.shape)


def load_tf1_checkpoint(path: str, *, expect: Mapping[str, Variables]
                        ) -> tuple[dict[str, Variables], ImportReport]:
    """Read an official TF1 checkpoint into Flax variables, one dict per network.

    path: checkpoint prefix (e.g. `.../acgan.model-399999`) or its directory.
    expect: network name (from `NETWORKS`) -> variables template (shapes; see
      `ipcgan_jax.weights.templates`); every template leaf must be in the checkpoint.
    Returns ({network: variables as numpy float32}, report). Raises
    `CheckpointMismatchError` listing missing, unexpected and mis-shaped names.
    """
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
            misshaped.append((name, stored[name], expected))
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
        raise CheckpointMismatchError(mismatch_message(
            path, "variables do not match the networks", missing=missing, unexpected=unexpected,
            misshaped=misshaped, stored_in="checkpoint"))

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
