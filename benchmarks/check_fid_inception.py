"""Checks the Flax FID InceptionV3 against pytorch-fid itself (outside CI: needs torch).

Run with a Python that has torch, torchvision and pytorch-fid (not the project's env):

    /tmp/torch_venv/bin/python benchmarks/check_fid_inception.py [--jax-python /tmp/venv/bin/python]

pytorch-fid's `InceptionV3([3])` (resize_input, normalize_input) is built with random
weights (its weights download is patched out; no network needed), its state dict saved
with torch.save in both formats (zip and legacy). The project's Python then computes
`ipcgan_jax.fid.inception_extractor` features from each file for the same uint8 images
(upscaled and downscaled sizes). Prints JSON with the max abs / relative differences.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from unittest import mock

import numpy as np


def import_torchvision() -> None:
    """Imports torchvision; a CUDA torchvision wheel beside a CPU torch lacks its C ops,
    whose fake-kernel registrations then fail: skip those (InceptionV3 needs none)."""
    try:
        importlib.import_module("torchvision")
    except RuntimeError:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        importlib.import_module("torchvision")


def random_fid_inception(seed: int):
    """pytorch-fid's InceptionV3([3]) and its inner Inception3, random weights whose
    activations stay O(1) (He-scaled convs, BN statistics near unit)."""
    import torch
    from pytorch_fid import inception as pytorch_fid_inception

    with mock.patch.object(pytorch_fid_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None):
        network = pytorch_fid_inception.fid_inception_v3()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("conv.weight") or name == "fc.weight":
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("bn.weight", "bn.running_var")):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:  # bn.bias, bn.running_mean, fc.bias
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    with mock.patch.object(pytorch_fid_inception, "fid_inception_v3", lambda: network):
        model = pytorch_fid_inception.InceptionV3([3]).eval()
    return model, network


JAX_SIDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ipcgan_jax import fid
    data = np.load(sys.argv[1])
    out = {}
    for weights in sys.argv[3:]:
        extract = fid.inception_extractor(weights, batch_size=4)
        for name in data.files:
            out[f"{weights}|{name}"] = extract(data[name])
    np.savez(sys.argv[2], **out)
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jax-python", default="/tmp/venv/bin/python")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import_torchvision()
    import torch

    model, network = random_fid_inception(args.seed)
    rng = np.random.default_rng(args.seed)
    images = {"upscaled_64x80": rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8),
              "downscaled_360x330": rng.integers(0, 256, (3, 360, 330, 3), dtype=np.uint8),
              "exact_299": rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)}
    with torch.no_grad():
        expected = {name: model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)[0]
                    .squeeze(-1).squeeze(-1).numpy().astype(np.float64) for name, x in images.items()}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        state_dict = network.state_dict()
        files = {"zip": os.path.join(tmp, "zip.pth"), "legacy": os.path.join(tmp, "legacy.pth")}
        torch.save(state_dict, files["zip"])
        torch.save(state_dict, files["legacy"], _use_new_zipfile_serialization=False)
        np.savez(os.path.join(tmp, "images.npz"), **images)
        subprocess.run([args.jax_python, "-c", JAX_SIDE, os.path.join(tmp, "images.npz"),
                        os.path.join(tmp, "features.npz"), *files.values()], cwd=repo, check=True)
        ours = dict(np.load(os.path.join(tmp, "features.npz")))
    report = {"torch": torch.__version__, "seed": args.seed, "feature_scale": {}, "comparisons": {}}
    for format_name, path in files.items():
        for name, reference in expected.items():
            got = ours[f"{path}|{name}"].astype(np.float64)
            difference = np.abs(got - reference)
            report["feature_scale"][name] = float(np.abs(reference).max())
            report["comparisons"][f"{format_name}/{name}"] = {
                "shape": list(got.shape), "max_abs_diff": float(difference.max()),
                "max_rel_diff": float(difference.max() / np.abs(reference).max()),
                # per feature, among those above 1% of the largest (tiny ones are all round-off)
                "max_rel_diff_of_features_above_1pct": float(np.max(
                    (difference / np.abs(reference))[np.abs(reference) > 0.01 * np.abs(reference).max()]))}
    report["worst_max_rel_diff"] = max(c["max_rel_diff"] for c in report["comparisons"].values())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
