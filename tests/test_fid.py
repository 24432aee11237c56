"""FID InceptionV3: the torch-free checkpoint reader, the Flax network against an
independent TensorFlow computation, and its selection in the evaluation."""
import collections
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from ipcgan_jax import configlib, evaluation, fid
from ipcgan_jax.models import inception
from ipcgan_jax.weights import fid_inception, torch_state_dict
from ipcgan_jax.weights.mismatch import MAX_LISTED, CheckpointMismatchError
from tests.helpers import config_file


# ----------------------------------------------------------------------------- a torch.save look-alike
class _TorchGlobal:
    """A torch global by name (torch is not installed): pickled as the GLOBAL opcode."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce requires a callable
        raise NotImplementedError


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce__(self):
        return (_TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage"}


class _TorchLikePickler(pickle._Pickler):
    """Protocol 2 as torch.save: tensors via _rebuild_tensor_v2, storages as persistent ids."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_TorchGlobal] = save_torch_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        storage_id = ("storage", _TorchGlobal("torch", _STORAGE_NAMES[obj.array.dtype]), obj.key, "cpu",
                      obj.array.size)
        return storage_id + (None,) if self.legacy else storage_id


def save_like_torch(path, tensors, storages, legacy):
    """Writes `tensors` (OrderedDict name -> _Tensor) byte for byte as torch.save lays out a
    state dict: the zip format (torch >= 1.6) or `_use_new_zipfile_serialization=False`."""
    state_dict = collections.OrderedDict(tensors)
    pickled = io.BytesIO()
    _TorchLikePickler(pickled, legacy).dump(state_dict)
    if legacy:
        with open(path, "wb") as f:
            for header in (torch_state_dict.LEGACY_MAGIC_NUMBER, torch_state_dict.LEGACY_PROTOCOL_VERSION,
                           dict(protocol_version=1001, little_endian=sys.byteorder == "little",
                                type_sizes=dict(short=2, int=4, long=4))):
                pickle.dump(header, f, protocol=2)
            f.write(pickled.getvalue())
            keys = sorted(storages)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                f.write(np.int64(storages[key].array.size).tobytes())
                f.write(storages[key].array.tobytes())
    else:
        archive = os.path.splitext(os.path.basename(path))[0]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as f:
            f.writestr(f"{archive}/data.pkl", pickled.getvalue())
            f.writestr(f"{archive}/byteorder", sys.byteorder)
            for key, storage in storages.items():
                f.writestr(f"{archive}/data/{key}", storage.array.tobytes())
            f.writestr(f"{archive}/version", "3\n")


def small_state_dict():
    """Tensors sharing storages, with offsets and transposed strides, and what they hold."""
    shared = _Storage("0", np.arange(12, dtype=np.float32))
    count = _Storage("1", np.array([7], np.int64))
    halves = _Storage("2", np.array([0.5, -2.0, 3.25], np.float16))
    doubles = _Storage("3", np.linspace(0, 1, 5))
    tensors = collections.OrderedDict([
        ("block.conv.weight", _Tensor(shared, 0, (3, 4), (4, 1))),
        ("block.conv.weight_t", _Tensor(shared, 0, (4, 3), (1, 4))),
        ("block.row", _Tensor(shared, 4, (4,), (1,))),
        ("block.bn.num_batches_tracked", _Tensor(count, 0, (), ())),
        ("halves", _Tensor(halves, 1, (2,), (1,))),
        ("doubles", _Tensor(doubles, 0, (5,), (1,))),
    ])
    expected = {"block.conv.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                "block.conv.weight_t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
                "block.row": np.array([4, 5, 6, 7], np.float32),
                "block.bn.num_batches_tracked": np.array(7, np.int64),
                "halves": np.array([-2.0, 3.25], np.float16),
                "doubles": np.linspace(0, 1, 5)}
    storages = {s.key: s for s in (shared, count, halves, doubles)}
    return tensors, storages, expected


def assert_same_state_dict(got, expected):
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ----------------------------------------------------------------------------- reader
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_both_torch_save_formats(tmp_path, legacy):
    tensors, storages, expected = small_state_dict()
    path = str(tmp_path / "weights.pth")
    save_like_torch(path, tensors, storages, legacy)
    assert zipfile.is_zipfile(path) is not legacy
    assert_same_state_dict(torch_state_dict.load_state_dict(path), expected)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_real_torch_save_files(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    state_dict = collections.OrderedDict([
        ("conv.weight", base), ("conv.weight_t", base.transpose(0, 2)), ("slice", base[1, 1:]),
        ("bn.num_batches_tracked", torch.tensor(3)), ("half", torch.tensor([1.5, -1.0], dtype=torch.float16)),
        ("bf16", torch.tensor([1.0, 2.5], dtype=torch.bfloat16))])
    path = str(tmp_path / "real.pth")
    torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy)
    expected = {k: (v.float().numpy().astype(torch_state_dict.STORAGE_DTYPES["BFloat16Storage"])
                    if v.dtype == torch.bfloat16 else v.numpy()) for k, v in state_dict.items()}
    assert_same_state_dict(torch_state_dict.load_state_dict(path), expected)


def test_reads_npz(tmp_path):
    path = str(tmp_path / "weights.npz")
    np.savez(path, **{"a.conv.weight": np.ones((2, 3)), "b": np.arange(3)})
    got = torch_state_dict.load_state_dict(path)
    assert sorted(got) == ["a.conv.weight", "b"] and got["a.conv.weight"].shape == (2, 3)


def test_reader_rejects_bad_files_naming_them(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(torch_state_dict.StateDictError, match=f"{text}.*not a PyTorch checkpoint"):
        torch_state_dict.load_state_dict(str(text))
    with pytest.raises(torch_state_dict.StateDictError, match="no such file"):
        torch_state_dict.load_state_dict(str(tmp_path / "absent.pth"))

    class Payload:  # a pickle that would run code on load
        def __reduce__(self):
            return os.system, ("echo pwned",)
    malicious = tmp_path / "malicious.pth"
    with zipfile.ZipFile(malicious, "w") as f:
        f.writestr("malicious/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
    with pytest.raises(torch_state_dict.StateDictError, match=r"malicious.pth: refuses to load posix\.system"):
        torch_state_dict.load_state_dict(str(malicious))

    tensors, storages, _ = small_state_dict()
    truncated = tmp_path / "truncated.pth"
    save_like_torch(str(truncated), tensors, storages, legacy=True)
    truncated.write_bytes(truncated.read_bytes()[:-6])
    with pytest.raises(torch_state_dict.StateDictError, match="truncated.pth.*storage '3'"):
        torch_state_dict.load_state_dict(str(truncated))


def test_inception_weights_errors_name_file_and_keys(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, **{"Conv2d_1a_3x3.conv.weight": np.zeros((2, 3, 3, 3), np.float32),
                      "Conv2d_1a_3x3.bn.weight": np.ones(32, np.float32),
                      "Mixed_5b.extra.conv.weight": np.zeros((1, 1, 1, 1), np.float32),
                      "fc.weight": np.zeros((1008, 2048), np.float32)})
    with pytest.raises(CheckpointMismatchError) as error:
        fid_inception.load_inception_variables(str(path))
    message = str(error.value)
    assert str(path) in message
    assert "missing (468):\n    Conv2d_1a_3x3.bn.bias" in message  # 470 used entries, 2 present
    assert "Mixed_7c.branch_pool.conv.weight" not in message  # long lists are cut short
    assert f"    ... and {468 - MAX_LISTED} more" in message
    assert "unexpected (1):\n    Mixed_5b.extra.conv.weight" in message and "fc.weight" not in message
    assert "wrong shape (1):\n    Conv2d_1a_3x3.conv.weight: file (2, 3, 3, 3), expected (32, 3, 3, 3)" in message


# ----------------------------------------------------------------------------- network vs TensorFlow
def random_state_dict(seed):
    """pytorch-fid's key names and torch layouts (from torchvision's InceptionV3 definition,
    not from our module), random weights whose activations stay O(1)."""
    rng = np.random.default_rng(seed)
    state_dict = collections.OrderedDict()
    for name, (out_channels, in_channels, kh, kw) in TF_CONV_SHAPES.items():
        fan_in = in_channels * kh * kw
        state_dict[f"{name}.conv.weight"] = (rng.standard_normal((out_channels, in_channels, kh, kw), np.float32)
                                             * np.float32(np.sqrt(2.0 / fan_in)))
        state_dict[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, out_channels).astype(np.float32)
        state_dict[f"{name}.bn.bias"] = (0.1 * rng.standard_normal(out_channels)).astype(np.float32)
        state_dict[f"{name}.bn.running_mean"] = (0.1 * rng.standard_normal(out_channels)).astype(np.float32)
        state_dict[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, out_channels).astype(np.float32)
        state_dict[f"{name}.bn.num_batches_tracked"] = np.array(0, np.int64)
    state_dict["fc.weight"] = (0.01 * rng.standard_normal((1008, 2048))).astype(np.float32)
    state_dict["fc.bias"] = np.zeros(1008, np.float32)
    return state_dict


class TFInception:
    """torchvision's Inception3 as patched by pytorch-fid's fid_inception_v3(), in TF ops,
    NHWC, from a state dict in torch layout. Also records each conv's weight shape."""

    def __init__(self, state_dict=None):
        self.state_dict, self.shapes = state_dict, {}

    def conv(self, x, name, out_channels, kernel, stride=1, padding=(0, 0)):
        self.shapes[name] = (out_channels, int(x.shape[-1])) + kernel
        if self.state_dict is None:  # shape pass: stand-in output of the right shape
            x = tf.pad(x, [[0, 0], [padding[0]] * 2, [padding[1]] * 2, [0, 0]])
            return tf.zeros([x.shape[0], (x.shape[1] - kernel[0]) // stride + 1,
                             (x.shape[2] - kernel[1]) // stride + 1, out_channels])
        p = lambda key: tf.constant(self.state_dict[f"{name}.{key}"])  # noqa: E731
        weight = tf.transpose(p("conv.weight"), [2, 3, 1, 0])  # OIHW -> HWIO
        x = tf.pad(x, [[0, 0], [padding[0]] * 2, [padding[1]] * 2, [0, 0]])
        x = tf.nn.conv2d(x, weight, stride, "VALID")
        x = tf.nn.batch_normalization(x, p("bn.running_mean"), p("bn.running_var"), p("bn.bias"),
                                      p("bn.weight"), variance_epsilon=1e-3)
        return tf.nn.relu(x)

    @staticmethod
    def avg_pool_without_padding(x):
        """F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False): window sums over zero
        padding divided by the number of real pixels in each window."""
        pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
        sums = tf.nn.avg_pool2d(tf.pad(x, pad), 3, 1, "VALID") * 9.0
        counts = tf.nn.avg_pool2d(tf.pad(tf.ones_like(x[..., :1]), pad), 3, 1, "VALID") * 9.0
        return sums / counts

    def block_a(self, x, name, pool_features):
        b1 = self.conv(x, f"{name}.branch1x1", 64, (1, 1))
        b5 = self.conv(self.conv(x, f"{name}.branch5x5_1", 48, (1, 1)), f"{name}.branch5x5_2", 64, (5, 5), 1, (2, 2))
        b3 = self.conv(x, f"{name}.branch3x3dbl_1", 64, (1, 1))
        b3 = self.conv(b3, f"{name}.branch3x3dbl_2", 96, (3, 3), 1, (1, 1))
        b3 = self.conv(b3, f"{name}.branch3x3dbl_3", 96, (3, 3), 1, (1, 1))
        bp = self.conv(self.avg_pool_without_padding(x), f"{name}.branch_pool", pool_features, (1, 1))
        return tf.concat([b1, b5, b3, bp], -1)

    def block_b(self, x, name):
        b3 = self.conv(x, f"{name}.branch3x3", 384, (3, 3), 2)
        bd = self.conv(x, f"{name}.branch3x3dbl_1", 64, (1, 1))
        bd = self.conv(bd, f"{name}.branch3x3dbl_2", 96, (3, 3), 1, (1, 1))
        bd = self.conv(bd, f"{name}.branch3x3dbl_3", 96, (3, 3), 2)
        return tf.concat([b3, bd, tf.nn.max_pool2d(x, 3, 2, "VALID")], -1)

    def block_c(self, x, name, c7):
        b1 = self.conv(x, f"{name}.branch1x1", 192, (1, 1))
        b7 = self.conv(x, f"{name}.branch7x7_1", c7, (1, 1))
        b7 = self.conv(b7, f"{name}.branch7x7_2", c7, (1, 7), 1, (0, 3))
        b7 = self.conv(b7, f"{name}.branch7x7_3", 192, (7, 1), 1, (3, 0))
        bd = self.conv(x, f"{name}.branch7x7dbl_1", c7, (1, 1))
        for i, (channels, kernel, padding) in enumerate(
                [(c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)), (192, (1, 7), (0, 3))], start=2):
            bd = self.conv(bd, f"{name}.branch7x7dbl_{i}", channels, kernel, 1, padding)
        bp = self.conv(self.avg_pool_without_padding(x), f"{name}.branch_pool", 192, (1, 1))
        return tf.concat([b1, b7, bd, bp], -1)

    def block_d(self, x, name):
        b3 = self.conv(self.conv(x, f"{name}.branch3x3_1", 192, (1, 1)), f"{name}.branch3x3_2", 320, (3, 3), 2)
        b7 = self.conv(x, f"{name}.branch7x7x3_1", 192, (1, 1))
        b7 = self.conv(b7, f"{name}.branch7x7x3_2", 192, (1, 7), 1, (0, 3))
        b7 = self.conv(b7, f"{name}.branch7x7x3_3", 192, (7, 1), 1, (3, 0))
        b7 = self.conv(b7, f"{name}.branch7x7x3_4", 192, (3, 3), 2)
        return tf.concat([b3, b7, tf.nn.max_pool2d(x, 3, 2, "VALID")], -1)

    def block_e(self, x, name, max_pool):
        b1 = self.conv(x, f"{name}.branch1x1", 320, (1, 1))
        b3 = self.conv(x, f"{name}.branch3x3_1", 384, (1, 1))
        b3 = tf.concat([self.conv(b3, f"{name}.branch3x3_2a", 384, (1, 3), 1, (0, 1)),
                        self.conv(b3, f"{name}.branch3x3_2b", 384, (3, 1), 1, (1, 0))], -1)
        bd = self.conv(x, f"{name}.branch3x3dbl_1", 448, (1, 1))
        bd = self.conv(bd, f"{name}.branch3x3dbl_2", 384, (3, 3), 1, (1, 1))
        bd = tf.concat([self.conv(bd, f"{name}.branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)),
                        self.conv(bd, f"{name}.branch3x3dbl_3b", 384, (3, 1), 1, (1, 0))], -1)
        if max_pool:  # F.max_pool2d(x, 3, 1, padding=1): padding never wins the max
            pooled = tf.nn.max_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf),
                                      3, 1, "VALID")
        else:
            pooled = self.avg_pool_without_padding(x)
        bp = self.conv(pooled, f"{name}.branch_pool", 192, (1, 1))
        return tf.concat([b1, b3, bd, bp], -1)

    def __call__(self, images_uint8):
        """pytorch-fid InceptionV3([3]): (0, 1) pixels, bilinear resize to 299, 2x - 1."""
        x = tf.image.resize(tf.cast(images_uint8, tf.float32) / 255.0, (299, 299), "bilinear", antialias=False)
        x = 2.0 * x - 1.0
        x = self.conv(x, "Conv2d_1a_3x3", 32, (3, 3), 2)
        x = self.conv(x, "Conv2d_2a_3x3", 32, (3, 3))
        x = self.conv(x, "Conv2d_2b_3x3", 64, (3, 3), 1, (1, 1))
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
        x = self.conv(x, "Conv2d_3b_1x1", 80, (1, 1))
        x = self.conv(x, "Conv2d_4a_3x3", 192, (3, 3))
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")
        x = self.block_a(x, "Mixed_5b", 32)
        x = self.block_a(x, "Mixed_5c", 64)
        x = self.block_a(x, "Mixed_5d", 64)
        x = self.block_b(x, "Mixed_6a")
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = self.block_c(x, name, c7)
        x = self.block_d(x, "Mixed_7a")
        x = self.block_e(x, "Mixed_7b", max_pool=False)
        x = self.block_e(x, "Mixed_7c", max_pool=True)
        return tf.reduce_mean(x, axis=[1, 2]).numpy()


def _conv_shapes():
    shape_pass = TFInception()
    shape_pass(np.zeros((1, 299, 299, 3), np.uint8))
    return shape_pass.shapes


TF_CONV_SHAPES = _conv_shapes()


def test_flax_module_has_the_reference_layers():
    expected = {}
    for name, shape in TF_CONV_SHAPES.items():
        expected[f"{name}.conv.weight"] = shape
        for key in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            expected[f"{name}.{key}"] = shape[:1]
    assert len(TF_CONV_SHAPES) == 94
    assert fid_inception.expected_state_dict_shapes() == expected


def test_inception_features_match_tensorflow_reference(tmp_path):
    state_dict = random_state_dict(seed=0)
    # The weights go through the legacy torch.save format, as pytorch-fid's release file.
    tensors, storages = collections.OrderedDict(), {}
    for key, (name, value) in enumerate(state_dict.items()):
        storages[str(key)] = _Storage(str(key), value)
        tensors[name] = _Tensor(storages[str(key)], 0, value.shape,
                                tuple(s // value.itemsize for s in value.strides))
    path = str(tmp_path / fid_inception.WEIGHTS_FILE)
    save_like_torch(path, tensors, storages, legacy=True)
    images = np.random.default_rng(1).integers(0, 256, (2, 72, 88, 3), dtype=np.uint8)

    features = fid.inception_extractor(path, batch_size=2)(images)
    expected = TFInception(state_dict)(images)

    assert features.shape == (2, inception.FEATURES) and features.dtype == np.float32
    assert 0.1 < np.abs(expected).max() < 1e3 and np.std(expected) > 0.01  # activations neither died nor blew up
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert not np.allclose(features[0], features[1], rtol=0.01)  # distinct images, distinct features


def test_downscaling_preprocessing_matches_tensorflow():
    import jax

    images = np.random.default_rng(2).integers(0, 256, (2, 360, 330, 3), dtype=np.uint8)
    got = np.asarray(jax.jit(inception.preprocess_images)(images))
    expected = (2.0 * tf.image.resize(images.astype(np.float32) / 255.0, (299, 299), "bilinear",
                                      antialias=False) - 1.0).numpy()
    # float32 source coordinates (x 360 / 299) differ in the last bits between the two.
    np.testing.assert_allclose(got, expected, atol=5e-5)
    floats = np.asarray(jax.jit(inception.preprocess_images)(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(floats, got, atol=1e-5)  # [0, 1] floats mean the same as uint8


# ----------------------------------------------------------------------------- evaluation
def test_eval_config_rejects_both_fid_sources():
    config = config_file("eval")
    config.fid_inception_weights = "weights.pth"
    config.fid_feature_extractor = "package.module:factory"
    with pytest.raises(evaluation.ConfigError, match="fid_inception_weights.*fid_feature_extractor"):
        configlib.validate_config(config)


def test_missing_weights_fail_before_any_work(tmp_path):
    config = config_file("eval")
    config.fid_inception_weights = "weights/absent.pth"
    # The workdir holds no run: the weights check comes before the generator loads.
    with pytest.raises(evaluation.ConfigError,
                       match=f"fid_inception_weights.*{tmp_path}/weights/absent.pth.*{fid_inception.WEIGHTS_URL}"):
        evaluation.evaluate(config, str(tmp_path))


class _ExtractorChosen(Exception):
    pass


def test_evaluation_uses_inception_weights_relative_to_workdir(tmp_path, monkeypatch):
    """The selection only (it comes first, so no GAN run is needed): the features flowing
    into FID are covered by test_evaluation's end-to-end run with a stand-in extractor."""
    os.makedirs(tmp_path / "weights")
    (tmp_path / "weights" / "fid.npz").write_bytes(b"")

    def chosen_extractor(weights_path, batch_size=50):
        raise _ExtractorChosen(weights_path)

    monkeypatch.setattr(fid, "inception_extractor", chosen_extractor)
    config = config_file("eval")
    config.fid_inception_weights = "weights/fid.npz"
    with pytest.raises(_ExtractorChosen) as chosen:
        evaluation.evaluate(config, str(tmp_path))
    assert chosen.value.args == (str(tmp_path / "weights" / "fid.npz"),)
    config.fid_inception_weights = str(tmp_path / "weights" / "fid.npz")  # absolute paths stay as they are
    with pytest.raises(_ExtractorChosen) as chosen:
        evaluation.evaluate(config, "/nonexistent/workdir")
    assert chosen.value.args == (str(tmp_path / "weights" / "fid.npz"),)
