"""The numpy input backend against tf.data: identical batches from the same plan, packed
faces, and training input on a host without TensorFlow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ipcgan_jax.data import batches, packed
from ipcgan_jax.data.legacy_resize import resize_uint8
from ipcgan_jax.data.numpy_pipeline import NumpyBatches
from ipcgan_jax.data.pack import balanced_choice, pack_splits
from ipcgan_jax.data.pipeline import TfDataBatches
from ipcgan_jax.data.plan import ClassifierPlan, EvalPlan, GanPlan
from ipcgan_jax.data.sources import FaceSource, load_faces

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUP_SIZES = (6, 4, 5, 4, 3)


def noise_arrays(size: int = 13, seed: int = 0) -> dict[str, np.ndarray]:
    """Random pixels (every resize weight matters), 22 images in 5 age groups,
    identities 10, 20, ... (2 images each), ages 15 + 10 * group."""
    age_group = np.concatenate([np.full(n, g) for g, n in enumerate(GROUP_SIZES)])
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (age_group.size, size, size, 3), dtype=np.uint8),
            "age_group": age_group, "identity": 10 * (np.arange(age_group.size) // 2 + 1),
            "age": 15 + 10 * age_group}


@pytest.fixture(scope="module")
def faces() -> FaceSource:
    return FaceSource.from_arrays(noise_arrays(), name="noise")


def assert_same_batch(expected: dict, actual: dict, context: str = "") -> None:
    assert expected.keys() == actual.keys(), context
    for name, value in expected.items():
        assert np.asarray(value).dtype == np.asarray(actual[name]).dtype, f"{context} {name}"
        assert np.array_equal(value, actual[name]), f"{context} {name} differs"


def assert_backends_agree(plan, steps) -> None:
    tfdata, numpy = TfDataBatches(plan), NumpyBatches(plan)
    for step in steps:
        assert_same_batch(tfdata.batch_at(step), numpy.batch_at(step), f"step {step}")


@pytest.mark.parametrize("in_size, out_size", [(13, 8), (13, 27), (400, 128), (400, 227),
                                               (250, 227), (9, 9)])
def test_numpy_resize_is_bit_identical_to_tf1(in_size, out_size):
    images = np.random.default_rng(in_size).integers(0, 256, (2, in_size, in_size, 3), np.uint8)
    expected = tf.compat.v1.image.resize_bilinear(images, (out_size, out_size),
                                                  align_corners=False).numpy()
    actual = resize_uint8(images, out_size)
    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("mixed_age", [False, True])
@pytest.mark.parametrize("flip", [False, True])
def test_gan_batches_identical(faces, mixed_age, flip):
    plan = GanPlan(faces, batch_size=4, seed=3, image_size=8, alexnet_size=17,
                   mixed_age=mixed_age, flip=flip, source_groups=(0, 1))
    assert_backends_agree(plan, (0, 1, 7, 30))
    if flip:  # the flips were exercised
        flips = np.concatenate([plan.arrays_at(step)[1] for step in range(4)])
        assert flips.any() and not flips.all()


@pytest.mark.parametrize("label", ["identity", "age_group"])
def test_classifier_batches_identical(faces, label):
    plan = ClassifierPlan(faces, label=label, batch_size=6, seed=1, image_size=11, flip=True)
    assert_backends_agree(plan, (0, 3, 9))


def test_eval_batches_identical_with_padding(faces):
    plan = EvalPlan(faces, batch_size=8, image_size=8, alexnet_size=10)
    numpy_batches = list(batches.eval_batches(faces, backend="numpy", batch_size=8, image_size=8,
                                              alexnet_size=10))
    tfdata_batches = list(batches.eval_batches(faces, backend="tfdata", batch_size=8, image_size=8,
                                               alexnet_size=10))
    assert len(numpy_batches) == len(tfdata_batches) == plan.num_batches == 3
    for index, (expected, actual) in enumerate(zip(tfdata_batches, numpy_batches)):
        assert_same_batch(expected, actual, f"eval batch {index}")
    assert int(numpy_batches[-1]["valid"]) == len(faces) - 16


@pytest.mark.parametrize("kind", ["gan_mixed_flip", "classifier", "eval"])
def test_process_shards_identical_and_concatenate(faces, kind):
    def plan(**shard):
        if kind == "gan_mixed_flip":
            return GanPlan(faces, batch_size=6, seed=5, image_size=8, alexnet_size=9,
                           mixed_age=True, flip=True, **shard)
        if kind == "classifier":
            return ClassifierPlan(faces, label="identity", batch_size=6, seed=5, image_size=8,
                                  flip=True, **shard)
        return EvalPlan(faces, batch_size=6, image_size=8, alexnet_size=9, **shard)

    whole = NumpyBatches(plan()).batch_at(2)
    parts = []
    for process_index in range(3):
        shard = plan(process_index=process_index, process_count=3)
        assert_backends_agree(shard, (2,))
        parts.append(NumpyBatches(shard).batch_at(2))
    for name, value in whole.items():
        if name == "valid":  # counted per shard
            assert sum(int(part[name]) for part in parts) == int(value)
        elif name == "step":
            assert all(int(part[name]) == int(value) for part in parts)
        else:
            np.testing.assert_array_equal(np.concatenate([part[name] for part in parts]), value,
                                          err_msg=name)


def test_resume_equals_uninterrupted_run_on_both_backends(faces):
    options = dict(batch_size=4, seed=2, image_size=8, alexnet_size=10, flip=True, mixed_age=True)
    full = list(batches.gan_batches(faces, backend="numpy", num_steps=9, **options))
    resumed = list(batches.gan_batches(faces, backend="numpy", num_steps=9, start_step=5,
                                       **options))
    assert [int(batch["step"]) for batch in resumed] == [5, 6, 7, 8]
    tfdata = list(batches.gan_batches(faces, backend="tfdata", num_steps=9, start_step=5,
                                      **options))
    for expected, numpy_batch, tfdata_batch in zip(full[5:], resumed, tfdata):
        assert_same_batch(expected, numpy_batch, "numpy resumed")
        assert_same_batch(expected, tfdata_batch, "tfdata resumed")
    classifier = dict(label="age_group", batch_size=5, seed=4, image_size=9)
    first = list(batches.classifier_batches(faces, backend="numpy", num_steps=6, **classifier))
    later = list(batches.classifier_batches(faces, backend="numpy", num_steps=6, start_step=4,
                                            prefetch=0, **classifier))
    for expected, actual in zip(first[4:], later):
        assert_same_batch(expected, actual, "classifier resumed")


def test_numpy_iterator_stops_early_and_rejects_bad_ranges(faces):
    stream = NumpyBatches(GanPlan(faces, batch_size=2, seed=0, image_size=6, alexnet_size=6)
                          ).batches(num_steps=1000, prefetch=3)
    assert int(next(stream)["step"]) == 0
    stream.close()  # drops the batches made ahead without making the other 996
    with pytest.raises(ValueError, match="start_step"):
        NumpyBatches(EvalPlan(faces, batch_size=4)).batches(num_steps=2, start_step=3)
    with pytest.raises(ValueError, match="prefetch"):
        NumpyBatches(EvalPlan(faces, batch_size=4)).batches(num_steps=2, prefetch=-1)
    with pytest.raises(ValueError, match="eval batch 6"):
        NumpyBatches(EvalPlan(faces, batch_size=4)).batch_at(6)


def test_unknown_backend_names_the_config_field(faces):
    with pytest.raises(ValueError, match="'backend' is 'grain'"):
        batches.eval_batches(faces, backend="grain", batch_size=4)


class JpegFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A built TFDS dataset of noise faces stored as JPEG (PIL's decoder differs from TF's,
    so packing must keep TF's pixels)."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(13, 13, 3), encoding_format="jpeg"),
            "age": tfds.features.Scalar(np.int32),
            "age_group": tfds.features.ClassLabel(num_classes=5),
            "identity": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        arrays = noise_arrays()
        for index in range(len(arrays["image"])):
            yield index, {"image": arrays["image"][index], "age": arrays["age"][index],
                          "age_group": arrays["age_group"][index],
                          "identity": f"person_{arrays['identity'][index]}"}


def test_packed_tfds_split_gives_tfdata_batches_to_numpy_backend(tmp_path):
    JpegFaces(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    stored = FaceSource.from_tfds(JpegFaces, "train", str(tmp_path / "tfds"))
    assert stored.fetch_encoded is not None  # tf.data decodes the JPEG files itself
    packed_path = str(tmp_path / "packed")
    packed.write_split(packed_path, "train", fetch_images=stored.images,
                       labels={"age_group": stored.age_group, "identity": stored.identity,
                               "age": stored.age},
                       identity_names=stored.identity_names,
                       metadata={"dataset": "jpeg_faces", "source": stored.name})
    config = ml_collections.ConfigDict({"name": "jpeg_faces", "packed_path": packed_path})
    unpacked = load_faces(config, "train")
    assert unpacked.name == "jpeg_faces:train:packed" and unpacked.fetch_encoded is None
    assert unpacked.identity_names == stored.identity_names
    for field in ("age_group", "identity", "age"):
        np.testing.assert_array_equal(getattr(unpacked, field), getattr(stored, field))
    options = dict(batch_size=4, seed=1, image_size=8, alexnet_size=11, flip=True)
    for step in (0, 4):
        assert_same_batch(TfDataBatches(GanPlan(stored, **options)).batch_at(step),
                          NumpyBatches(GanPlan(unpacked, **options)).batch_at(step), f"step {step}")
    classifier = dict(label="identity", batch_size=4, seed=1, image_size=9)
    assert_same_batch(TfDataBatches(ClassifierPlan(stored, **classifier)).batch_at(3),
                      NumpyBatches(ClassifierPlan(unpacked, **classifier)).batch_at(3))


def synthetic_config(packed_path: str = "") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="synthetic", num_identities=10, images_per_identity=6, size=16, seed=0,
        test_fraction=0.2, train_split="train", test_split="test", packed_path=packed_path))


def test_pack_command_writes_every_split_and_load_faces_reads_it(tmp_path):
    out = str(tmp_path / "packed")
    folders = pack_splits(synthetic_config(), ["train", "test"], out)
    assert folders == [os.path.join(out, "train"), os.path.join(out, "test")]
    for split in ("train", "test"):
        with open(os.path.join(out, split, packed.METADATA_FILE)) as file:
            metadata = json.load(file)
        original = load_faces(synthetic_config(), split)
        unpacked = load_faces(synthetic_config(out), split)
        assert metadata["dataset"] == "synthetic" and metadata["source"] == f"synthetic:{split}"
        assert metadata["split"] == split and metadata["count"] == len(original)
        assert metadata["image_shape"] == [16, 16, 3]
        assert metadata["data_config"]["num_identities"] == 10
        np.testing.assert_array_equal(unpacked.images(np.arange(len(unpacked))),
                                      original.images(np.arange(len(original))))
        np.testing.assert_array_equal(unpacked.age_group, original.age_group)
        np.testing.assert_array_equal(unpacked.identity, original.identity)
    with pytest.raises(FileExistsError, match="delete it"):
        pack_splits(synthetic_config(), ["test"], out)


def test_pack_writes_nothing_unless_every_split_can_be_written(tmp_path):
    """Splits are checked before any is written; a SPLIT.partial folder is deleted only when
    an interrupted pack left it (its marker inside), never when it is the user's."""
    out = tmp_path / "packed"
    users = out / "train.partial"
    users.mkdir(parents=True)
    (users / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="train.partial exists and was not left by an interrupted pack"):
        pack_splits(synthetic_config(), ["test", "train"], str(out))
    assert os.listdir(out) == ["train.partial"] and (users / "keep.txt").read_text() == "mine"

    other = tmp_path / "other"
    with pytest.raises(ValueError, match="got 'nosuch'"):
        pack_splits(synthetic_config(), ["test", "nosuch"], str(other))
    assert not other.exists() or not os.listdir(other)

    interrupted = other / "test.partial"  # what a pack killed while writing leaves
    interrupted.mkdir(parents=True)
    (interrupted / packed.PARTIAL_MARKER).touch()
    (interrupted / packed.IMAGES_FILE).write_bytes(b"half")
    assert pack_splits(synthetic_config(), ["test"], str(other)) == [str(other / "test")]
    assert sorted(os.listdir(other)) == ["test"]
    assert packed.PARTIAL_MARKER not in os.listdir(other / "test")
    np.testing.assert_array_equal(load_faces(synthetic_config(str(other)), "test").age_group,
                                  load_faces(synthetic_config(), "test").age_group)

    # The command says so in one line.
    config = tmp_path / "pack_config.py"
    config.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict("
                      f"{{'data': {synthetic_config().to_dict()!r}}})\n")
    command = subprocess.run([sys.executable, "-m", "ipcgan_jax.data.pack", f"--config={config}",
                              f"--out={other}", "--splits=test"], capture_output=True, text=True, cwd=REPO)
    assert command.returncode == 1 and "Traceback" not in command.stderr, command.stderr
    assert command.stderr.strip().splitlines()[-1] == (f"error: {other / 'test'} exists; delete it to pack "
                                                      "split 'test' again")


def test_pack_shrinks_by_size_jpeg_and_group_cap_and_load_faces_decodes(tmp_path):
    """What launch/gpu_check.sh carries: resized, JPEG-stored, at most K faces per group."""
    import jax.numpy as jnp

    from ipcgan_jax import preprocessing

    original = load_faces(synthetic_config(), "train")
    counts = np.bincount(original.age_group, minlength=5)
    cap = int(np.sort(counts)[2])  # some groups above the cap, some at or below it
    out = str(tmp_path / "packed")
    pack_splits(synthetic_config(), ["train"], out, image_size=24, jpeg_quality=95, max_per_group=cap, seed=3)
    unpacked = load_faces(synthetic_config(out), "train")
    kept = balanced_choice(original.age_group, cap, seed=3)
    np.testing.assert_array_equal(np.bincount(unpacked.age_group, minlength=5), np.minimum(counts, cap))
    for field in ("age_group", "identity", "age"):
        np.testing.assert_array_equal(getattr(unpacked, field), getattr(original, field)[kept])
    # The pixels: JPEG files of TF1's legacy resize of the kept faces (the JAX resize here).
    resized = np.asarray(preprocessing.legacy_resize_bilinear(
        jnp.asarray(original.images(kept), jnp.float32), 24, 24))
    decoded = unpacked.images(np.arange(len(unpacked))).astype(np.float32)
    assert decoded.shape == resized.shape
    assert np.abs(decoded - resized).mean() < 3.0  # JPEG's loss at quality 95
    assert np.abs(decoded - resized[::-1]).mean() > 10.0  # and each face in its row
    with open(os.path.join(out, "train", packed.METADATA_FILE)) as file:
        metadata = json.load(file)
    assert (metadata["image_encoding"], metadata["jpeg_quality"], metadata["image_shape"]) == ("jpeg", 95, [24, 24, 3])
    assert metadata["packed_from"] == {"count": len(original), "image_size": 24, "max_per_group": cap, "seed": 3}
    assert os.path.getsize(os.path.join(out, "train", packed.JPEG_IMAGES_FILE)) < decoded.size  # smaller than the pixels
    assert not os.path.exists(os.path.join(out, "train", packed.IMAGES_FILE))

    # Resized without JPEG: TF1's legacy resize rounded to uint8, to the JAX resize's rounding.
    pack_splits(synthetic_config(), ["test"], out, image_size=24)
    test_faces = load_faces(synthetic_config(), "test")
    expected = np.asarray(preprocessing.legacy_resize_bilinear(
        jnp.asarray(test_faces.images(np.arange(len(test_faces))), jnp.float32), 24, 24))
    stored = load_faces(synthetic_config(out), "test").images(np.arange(len(test_faces))).astype(np.float32)
    assert np.abs(stored - expected).max() <= 0.5 + 1e-3


def test_balanced_choice_caps_each_group_reproducibly():
    age_group = np.array([0] * 7 + [1] * 2 + [2] * 5 + [0] * 3)
    kept = balanced_choice(age_group, 4, seed=1)
    assert np.all(np.diff(kept) > 0)
    assert np.bincount(age_group[kept]).tolist() == [4, 2, 4]
    np.testing.assert_array_equal(kept, balanced_choice(age_group, 4, seed=1))
    assert not np.array_equal(kept, balanced_choice(age_group, 4, seed=2))
    np.testing.assert_array_equal(balanced_choice(age_group, 0, seed=1), np.arange(len(age_group)))


def test_packed_jpeg_errors_name_the_file(tmp_path):
    out = str(tmp_path / "packed")
    with pytest.raises(ValueError, match="jpeg_quality is 101"):
        pack_splits(synthetic_config(), ["test"], out, jpeg_quality=101)
    with pytest.raises(ValueError, match="image_size is -2"):
        pack_splits(synthetic_config(), ["test"], out, image_size=-2)
    with pytest.raises(ValueError, match="max_per_group is -1"):
        pack_splits(synthetic_config(), ["test"], out, max_per_group=-1)
    pack_splits(synthetic_config(), ["test"], out, jpeg_quality=90)
    jpeg_path = os.path.join(out, "test", packed.JPEG_IMAGES_FILE)
    with np.load(jpeg_path) as stored:
        data, offsets = stored["data"], stored["offsets"]
    np.savez(jpeg_path, data=data, offsets=offsets[:-1])
    with pytest.raises(ValueError, match=r"images_jpeg.npz: .* images, metadata.json says count"):
        load_faces(synthetic_config(out), "test")
    np.savez(jpeg_path, data=data[:offsets[1] // 2], offsets=offsets)
    with pytest.raises(OSError):  # PIL: a truncated or missing JPEG file
        load_faces(synthetic_config(out), "test")


def test_packed_errors_name_the_file_or_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json not found.*ipcgan_jax.data.pack"):
        load_faces(synthetic_config(str(tmp_path)), "train")
    out = str(tmp_path / "packed")
    pack_splits(synthetic_config(), ["test"], out)
    wrong_dataset = ml_collections.ConfigDict({"name": "cacd", "packed_path": out})
    with pytest.raises(ValueError, match="packed from dataset 'synthetic'.*'name' is 'cacd'"):
        load_faces(wrong_dataset, "test")
    labels_path = os.path.join(out, "test", packed.LABELS_FILE)
    with np.load(labels_path) as labels:
        arrays = {name: labels[name] for name in labels.files}
    np.savez(labels_path, **{**arrays, "age": arrays["age"][:-1]})
    with pytest.raises(ValueError, match="field 'age' has .* rows"):
        load_faces(synthetic_config(out), "test")
    np.savez(labels_path, **{name: value for name, value in arrays.items() if name != "identity"})
    with pytest.raises(ValueError, match=r"labels.npz: missing field\(s\) \['identity'\]"):
        load_faces(synthetic_config(out), "test")


def test_numpy_backend_trains_without_tensorflow(tmp_path):
    """A host without TensorFlow or dlib (the GPU machine): the trainers import; the GAN
    and classifier streams of the synthetic faces and of packed splits (decoded pixels,
    JPEG), and the eval batches, with TensorFlow unimportable."""
    out, jpeg_out = str(tmp_path / "packed"), str(tmp_path / "packed_jpeg")
    pack_splits(synthetic_config(), ["train"], out)
    pack_splits(synthetic_config(), ["train"], jpeg_out, jpeg_quality=90)
    script = textwrap.dedent(f"""
        import sys
        for name in ("tensorflow", "tensorflow_datasets", "dlib", "face_recognition_models"):
            sys.modules[name] = None  # any import of these now fails
        import ml_collections
        from ipcgan_jax import identity, tasks
        from ipcgan_jax.data import batches, sources

        try:
            identity.FaceEmbedder(0.0, 0.0)
        except ImportError as error:
            assert "dlib-bin" in str(error), error
            print("identity metrics need dlib")
        for packed_path in ("", {out!r}, {jpeg_out!r}):
            config = ml_collections.ConfigDict(dict(
                name="synthetic", num_identities=10, images_per_identity=6, size=16, seed=0,
                test_fraction=0.2, packed_path=packed_path))
            faces = sources.load_faces(config, "train")
            gan = list(batches.gan_batches(faces, backend="numpy", batch_size=4, seed=0,
                                           image_size=8, alexnet_size=12, num_steps=3, flip=True))
            assert [int(b["step"]) for b in gan] == [0, 1, 2]
            assert gan[0]["source_g_alexnet"].shape == (4, 12, 12, 3)
            classifier = list(batches.classifier_batches(
                faces, backend="numpy", label="identity", batch_size=4, seed=0, image_size=12,
                num_steps=2))
            assert classifier[1]["image"].shape == (4, 12, 12, 3)
            evaluated = list(batches.eval_batches(faces, backend="numpy", batch_size=16,
                                                  image_size=8))
            assert sum(int(b["valid"]) for b in evaluated) == len(faces)
            print(faces.name, "ok")
        try:
            batches.eval_batches(faces, backend="tfdata", batch_size=16)
        except ImportError:
            print("tfdata needs tensorflow")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == [
        "identity metrics need dlib", "synthetic:train ok", "synthetic:train:packed ok",
        "synthetic:train:packed ok", "tfdata needs tensorflow"]
