"""The tf.data input pipelines on small sources (docs/faithfulness.md §10 batches, §8 scalings)."""
from __future__ import annotations

import collections

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ipcgan_jax import preprocessing
from ipcgan_jax.data import sources
from ipcgan_jax.data.batches import classifier_batches, eval_batches, gan_batches
from ipcgan_jax.data.pipeline import TfDataBatches
from ipcgan_jax.data.plan import ClassifierPlan, GanPlan, identity_classes
from ipcgan_jax.data.streams import ORDERED_PAIRS, PairSchedule
from ipcgan_jax.data.sources import FaceSource, identity_disjoint_split, load_faces

GROUP_SIZES = (13, 7, 9, 11, 6)
MEAN = np.array([104.0, 117.0, 124.0], np.float32)


def make_flat_arrays(group_sizes=GROUP_SIZES, size: int = 12) -> dict:
    """Each image is one flat colour that encodes its index (R = i % 256, G = i // 256,
    B = 10 * group): bilinear resizing keeps a flat colour exactly, so a batch tells
    which images it holds. Identities are 10, 20, ... (not contiguous), 3 images each."""
    age_group = np.concatenate([np.full(n, g) for g, n in enumerate(group_sizes)])
    count = age_group.size
    index = np.arange(count)
    colours = np.stack([index % 256, index // 256, 10 * age_group], axis=-1).astype(np.uint8)
    images = np.broadcast_to(colours[:, None, None, :], (count, size, size, 3)).copy()
    return {"image": images, "age_group": age_group, "identity": 10 * (index // 3 + 1),
            "age": 15 + 10 * age_group}


def decode_index(pixels_rgb: np.ndarray) -> np.ndarray:
    """Image index of flat-coloured batch (k, H, W, 3) in RGB 0..255."""
    rounded = np.rint(pixels_rgb).astype(np.int64)
    assert (rounded == rounded[:, :1, :1, :]).all(), "images should stay flat"
    return rounded[:, 0, 0, 0] + 256 * rounded[:, 0, 0, 1]


def from_generator_scaling(batch: np.ndarray) -> np.ndarray:
    return decode_index(batch + MEAN)


def from_unit_range(batch: np.ndarray) -> np.ndarray:
    return decode_index((batch + 1.0) * 127.5)


@pytest.fixture(scope="module")
def flat_source() -> FaceSource:
    return FaceSource.from_arrays(make_flat_arrays(), name="flat")


@pytest.fixture(scope="module")
def noise_source() -> FaceSource:
    rng = np.random.default_rng(7)
    arrays = make_flat_arrays(group_sizes=(4, 3, 3, 3, 3), size=50)
    arrays["image"] = rng.integers(0, 256, arrays["image"].shape, dtype=np.uint8)
    return FaceSource.from_arrays(arrays, name="noise")


def gan_pipeline(source: FaceSource, **options) -> TfDataBatches:
    return TfDataBatches(GanPlan(source, **options))


def classifier_pipeline(source: FaceSource, **options) -> TfDataBatches:
    return TfDataBatches(ClassifierPlan(source, **options))


def small_gan(source: FaceSource, **overrides) -> TfDataBatches:
    kwargs = dict(batch_size=4, seed=3, image_size=8, alexnet_size=10)
    kwargs.update(overrides)
    return gan_pipeline(source, **kwargs)


def assert_batches_equal(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def assert_epochs_are_reshuffled_permutations(stream: np.ndarray, pool: np.ndarray) -> None:
    """Every full epoch of the stream visits each image of `pool` once; orders differ."""
    epochs = [stream[start:start + pool.size]
              for start in range(0, stream.size - pool.size + 1, pool.size)]
    assert len(epochs) >= 3
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.sort(pool))
    assert len({tuple(epoch) for epoch in epochs}) > 1


def test_schedule_each_ordered_pair_equally_often_per_round():
    schedule = PairSchedule(seed=5, pair_repeats_per_round=3)
    target, false, uses = schedule.pairs(np.arange(2 * schedule.round_length))
    assert (target != false).all()
    for round_start in (0, schedule.round_length):
        part = slice(round_start, round_start + schedule.round_length)
        counts = collections.Counter(zip(target[part].tolist(), false[part].tolist()))
        assert set(counts) == {tuple(pair) for pair in ORDERED_PAIRS.tolist()}
        assert set(counts.values()) == {3}
    # The second round is a fresh shuffle, not a copy.
    assert not np.array_equal(target[:60], target[60:])
    # `uses` counts the earlier slots with the same target, across rounds.
    for slot in range(target.size):
        assert uses[slot] == np.count_nonzero(target[:slot] == target[slot])


def test_paper_schedule_is_20000_of_each_pair_in_400000_steps():
    target, false, _ = PairSchedule(seed=0).pairs(np.arange(400_000))
    pair_id = target * 5 + false
    counts = np.bincount(pair_id, minlength=25)
    assert (counts[[t * 5 + f for t, f in ORDERED_PAIRS]] == 20_000).all()
    assert counts.sum() == 400_000


def test_one_target_group_per_batch_images_match_plan(flat_source):
    pipeline = small_gan(flat_source)
    group_of = flat_source.age_group
    for batch in pipeline.batches(num_steps=12):
        plan = pipeline.plan.plan_at(int(batch["step"]))
        target = batch["target_group"]
        assert (target == target[0]).all() and (batch["false_group"] == batch["false_group"][0]).all()
        assert target[0] != batch["false_group"][0]
        np.testing.assert_array_equal(target, plan["target_group"])
        real = from_unit_range(batch["real"])
        source_d = from_generator_scaling(batch["source_d"])
        source_g = from_generator_scaling(batch["source_g"])
        np.testing.assert_array_equal(real, plan["real_index"])
        np.testing.assert_array_equal(source_d, plan["source_d_index"])
        np.testing.assert_array_equal(source_g, plan["source_g_index"])
        np.testing.assert_array_equal(from_generator_scaling(batch["source_g_alexnet"]), source_g)
        assert (group_of[real] == target[0]).all()
        assert (group_of[source_d] == 0).all() and (group_of[source_g] == 0).all()


def test_streams_sequential_with_reshuffle_at_wrap(flat_source):
    pipeline = small_gan(flat_source)
    plans = [pipeline.plan.plan_at(step) for step in range(120)]
    for group in range(5):
        stream = np.concatenate([plan["real_index"] for plan in plans
                                 if plan["target_group"][0] == group])
        assert_epochs_are_reshuffled_permutations(stream, np.flatnonzero(flat_source.age_group == group))
    sources = np.concatenate([np.concatenate([plan["source_d_index"], plan["source_g_index"]])
                              for plan in plans])
    assert_epochs_are_reshuffled_permutations(sources, np.flatnonzero(flat_source.age_group == 0))
    # D and G get different (fresh) source images in a step.
    assert any(not np.array_equal(plan["source_d_index"], plan["source_g_index"]) for plan in plans)


def test_group_order_depends_only_on_seed_group_epoch(flat_source):
    def real_stream(batch_size: int, group: int) -> np.ndarray:
        pipeline = small_gan(flat_source, batch_size=batch_size)
        return np.concatenate([pipeline.plan.plan_at(step)["real_index"] for step in range(60)
                               if pipeline.plan.plan_at(step)["target_group"][0] == group])

    for group in range(5):
        four, six = real_stream(4, group), real_stream(6, group)
        length = min(four.size, six.size)
        np.testing.assert_array_equal(four[:length], six[:length])


def test_scalings_match_tf_and_jax(noise_source):
    pipeline = gan_pipeline(noise_source, batch_size=4, seed=1, image_size=16, alexnet_size=27,
                           flip=True)
    flips_seen = []
    for step in range(3):
        batch = pipeline.batch_at(step)
        plan = pipeline.plan.plan_at(step)
        flips_seen.append(plan["real_flip"])

        def stored(kind: str) -> np.ndarray:
            images = noise_source.images(plan[f"{kind}_index"])
            return np.where(plan[f"{kind}_flip"][:, None, None, None], images[:, :, ::-1], images)

        def tf_resize(images: np.ndarray, size: int) -> np.ndarray:
            return tf.compat.v1.image.resize_bilinear(
                images, (size, size), align_corners=False).numpy()

        np.testing.assert_array_equal(batch["source_d"], tf_resize(stored("source_d"), 16) - MEAN)
        np.testing.assert_array_equal(batch["source_g"], tf_resize(stored("source_g"), 16) - MEAN)
        np.testing.assert_array_equal(batch["source_g_alexnet"],
                                      tf_resize(stored("source_g"), 27) - MEAN)
        np.testing.assert_allclose(batch["real"], tf_resize(stored("real"), 16) / 127.5 - 1.0,
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            batch["source_g"],
            preprocessing.pixels_to_generator_input(jnp.asarray(stored("source_g")), 16),
            rtol=0, atol=2e-3)
        np.testing.assert_allclose(
            batch["source_g_alexnet"],
            preprocessing.pixels_to_alexnet_input(jnp.asarray(stored("source_g")), 27),
            rtol=0, atol=2e-3)
        np.testing.assert_allclose(
            batch["real"],
            preprocessing.pixels_to_discriminator_input(jnp.asarray(stored("real")), 16),
            rtol=0, atol=1e-5)
    flips_seen = np.concatenate(flips_seen)
    assert flips_seen.any() and not flips_seen.all()


def test_paper_sizes_400_to_128_and_227():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 400, 400, 3), dtype=np.uint8)
    source = FaceSource.from_arrays(
        {"image": images, "age_group": np.arange(5), "identity": np.arange(5)})
    batch = gan_pipeline(source, batch_size=1, seed=0).batch_at(0)
    assert batch["source_d"].shape == (1, 128, 128, 3)
    assert batch["source_g_alexnet"].shape == (1, 227, 227, 3)
    np.testing.assert_allclose(
        batch["source_g_alexnet"],
        preprocessing.pixels_to_alexnet_input(jnp.asarray(images[:1]), 227), rtol=0, atol=2e-3)
    np.testing.assert_allclose(
        batch["real"],
        preprocessing.pixels_to_discriminator_input(
            jnp.asarray(images[batch["target_group"]]), 128), rtol=0, atol=1e-5)


def test_resume_equals_uninterrupted(flat_source):
    full = list(gan_batches(flat_source, batch_size=4, seed=2, num_steps=10, image_size=8,
                            alexnet_size=10, flip=True))
    resumed = list(gan_batches(flat_source, batch_size=4, seed=2, num_steps=10, image_size=8,
                               alexnet_size=10, flip=True, start_step=6))
    assert [int(batch["step"]) for batch in resumed] == [6, 7, 8, 9]
    for expected, actual in zip(full[6:], resumed):
        assert_batches_equal(expected, actual)
    # A longer run has the same first steps: the schedule does not depend on num_steps.
    longer = gan_batches(flat_source, batch_size=4, seed=2, num_steps=25, image_size=8,
                         alexnet_size=10, flip=True)
    for expected, actual in zip(full, longer):
        assert_batches_equal(expected, actual)


@pytest.mark.parametrize("mixed_age", [False, True])
def test_process_shards_concatenate_to_global_batch(flat_source, mixed_age):
    whole = small_gan(flat_source, batch_size=6, mixed_age=mixed_age, flip=True)
    shards = [small_gan(flat_source, batch_size=6, mixed_age=mixed_age, flip=True,
                        process_index=index, process_count=2) for index in range(2)]
    for step in (0, 5, 17):
        expected = whole.batch_at(step)
        parts = [shard.batch_at(step) for shard in shards]
        for name, value in expected.items():
            if name == "step":
                assert all(part["step"] == value for part in parts)
            else:
                np.testing.assert_array_equal(
                    np.concatenate([part[name] for part in parts]), value, err_msg=name)
                assert parts[0][name].shape[0] == 3


def test_deterministic_for_a_seed(flat_source):
    first = list(small_gan(flat_source, seed=11).batches(num_steps=4))
    second = list(small_gan(flat_source, seed=11).batches(num_steps=4))
    other = list(small_gan(flat_source, seed=12).batches(num_steps=4))
    for a, b in zip(first, second):
        assert_batches_equal(a, b)
    assert any(not np.array_equal(a["real"], c["real"]) or
               not np.array_equal(a["source_d"], c["source_d"]) for a, c in zip(first, other))


def test_mixed_age_batches(flat_source):
    # Rounds of 20 pairs x 2 = 40 examples = 10 steps of 4.
    pipeline = small_gan(flat_source, mixed_age=True, pair_repeats_per_round=2)
    group_of = flat_source.age_group
    pairs, reals = [], []
    for step in range(10):
        plan = pipeline.plan.plan_at(step)
        assert (plan["target_group"] != plan["false_group"]).all()
        assert (group_of[plan["real_index"]] == plan["target_group"]).all()
        pairs += list(zip(plan["target_group"].tolist(), plan["false_group"].tolist()))
        reals.append(plan["real_index"])
    counts = collections.Counter(pairs)
    assert len(counts) == 20 and set(counts.values()) == {2}
    assert any(len(set(pipeline.plan.plan_at(step)["target_group"].tolist())) > 1 for step in range(10))
    batch = pipeline.batch_at(3)
    np.testing.assert_array_equal(from_unit_range(batch["real"]), pipeline.plan.plan_at(3)["real_index"])
    # Per group, the real images still walk a reshuffled sequence of the group.
    plans = [pipeline.plan.plan_at(step) for step in range(80)]
    targets = np.concatenate([plan["target_group"] for plan in plans])
    real_index = np.concatenate([plan["real_index"] for plan in plans])
    for group in range(5):
        assert_epochs_are_reshuffled_permutations(real_index[targets == group],
                                                  np.flatnonzero(group_of == group))


def test_classifier_identity_labels_shuffle_and_resume(flat_source):
    classes = identity_classes(flat_source)
    np.testing.assert_array_equal(classes, np.unique(flat_source.identity))
    pipeline = classifier_pipeline(flat_source, label="identity", batch_size=5, seed=4,
                                  image_size=9)
    batches = list(pipeline.batches(num_steps=30))
    index = np.concatenate([from_generator_scaling(batch["image"]) for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches])
    assert batches[0]["image"].shape == (5, 9, 9, 3) and labels.dtype == np.int32
    assert set(labels.tolist()) == set(range(classes.size))
    np.testing.assert_array_equal(classes[labels], flat_source.identity[index])
    assert_epochs_are_reshuffled_permutations(index, np.arange(len(flat_source)))
    resumed = list(classifier_batches(flat_source, label="identity", batch_size=5, seed=4,
                                      image_size=9, num_steps=30, start_step=21))
    for expected, actual in zip(batches[21:], resumed):
        assert_batches_equal(expected, actual)
    shard = classifier_pipeline(flat_source, label="identity", batch_size=5, seed=4, image_size=9,
                               process_index=1, process_count=5).batch_at(7)
    np.testing.assert_array_equal(shard["label"], batches[7]["label"][1:2])


def test_classifier_age_group_labels(flat_source):
    batch = classifier_pipeline(flat_source, label="age_group", batch_size=8, seed=0,
                               image_size=6).batch_at(2)
    index = from_generator_scaling(batch["image"])
    np.testing.assert_array_equal(batch["label"], flat_source.age_group[index])


def test_eval_batches_cover_split_once_with_mask(flat_source):
    total = len(flat_source)
    batches = list(eval_batches(flat_source, batch_size=8, image_size=6, alexnet_size=7))
    assert len(batches) == -(-total // 8)
    index = np.concatenate([batch["index"][batch["mask"]] for batch in batches])
    np.testing.assert_array_equal(index, np.arange(total))
    assert sum(int(batch["valid"]) for batch in batches) == total
    last = batches[-1]
    assert int(last["valid"]) == total % 8 and not last["mask"][total % 8:].any()
    for batch in batches:
        np.testing.assert_array_equal(from_generator_scaling(batch["source"]), batch["index"])
        np.testing.assert_array_equal(from_unit_range(batch["real"]), batch["index"])
        np.testing.assert_array_equal(decode_index(batch["pixels"]), batch["index"])
        np.testing.assert_array_equal(from_generator_scaling(batch["source_alexnet"]),
                                      batch["index"])
        np.testing.assert_array_equal(batch["age_group"], flat_source.age_group[batch["index"]])
    shards = [list(eval_batches(flat_source, batch_size=8, image_size=6, process_index=p,
                                process_count=2)) for p in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([shards[0][-1]["index"], shards[1][-1]["index"]]), last["index"])


def test_missing_age_group_is_a_clear_error():
    arrays = make_flat_arrays(group_sizes=(3, 3, 3, 0, 3))
    source = FaceSource.from_arrays(arrays, name="train")
    with pytest.raises(ValueError, match="no images in age group 3"):
        small_gan(source)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=5, process_count=2), "multiple of process_count"),
    (dict(process_index=2, process_count=2), "process_index"),
    (dict(source_groups=(7,)), "source_groups"),
    (dict(seed=-1), "seed"),
])
def test_bad_pipeline_arguments(flat_source, overrides, message):
    with pytest.raises(ValueError, match=message):
        small_gan(flat_source, **overrides)


def test_bad_steps_and_labels(flat_source):
    with pytest.raises(ValueError, match="start_step"):
        small_gan(flat_source).batches(num_steps=3, start_step=5)
    with pytest.raises(ValueError, match="label"):
        classifier_pipeline(flat_source, label="gender", batch_size=2, seed=0)


def test_from_arrays_errors():
    arrays = make_flat_arrays(group_sizes=(2, 2, 2, 2, 2))
    with pytest.raises(KeyError, match="identity"):
        FaceSource.from_arrays({k: v for k, v in arrays.items() if k != "identity"})
    with pytest.raises(ValueError, match="age_group"):
        FaceSource.from_arrays({**arrays, "age_group": arrays["age_group"] + 1})
    with pytest.raises(ValueError, match="'image'"):
        FaceSource.from_arrays({**arrays, "image": arrays["image"].astype(np.float32)})
    with pytest.raises(IndexError, match="out of range"):
        FaceSource.from_arrays(arrays).images([10])


def test_load_faces_config_errors():
    with pytest.raises(ValueError, match="'name'"):
        load_faces(ml_collections.ConfigDict({"name": "celeba", "data_dir": "/tmp"}), "train")
    with pytest.raises(ValueError, match="'num_identities'"):
        load_faces(ml_collections.ConfigDict({"name": "synthetic", "num_identities": None}),
                   "train")


def test_load_faces_unbuilt_tfds_dataset_names_data_dir(tmp_path):
    config = ml_collections.ConfigDict(
        {"name": "cacd", "data_dir": str(tmp_path), "builder_config": ""})
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_faces(config, "train")


def test_identity_disjoint_split():
    identity = np.repeat(np.arange(10), 3)
    train, test = identity_disjoint_split(identity, 0.2, seed=0)
    assert not set(identity[train]) & set(identity[test])
    assert len(set(identity[test])) == 2
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(30))


class TinyFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A built TFDS dataset in the face builders' format, from `make_flat_arrays`."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 12, 3), encoding_format="png"),
            "age": tfds.features.Scalar(np.int32),
            "age_group": tfds.features.ClassLabel(num_classes=5),
            "identity": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        arrays = make_flat_arrays(group_sizes=(3, 2, 2, 2, 2))
        for index in range(arrays["image"].shape[0]):
            # String identities as an image folder stores them; one image without one.
            identity = "" if index == 4 else f"person_{arrays['identity'][index]}"
            yield index, {"image": arrays["image"][index], "age": arrays["age"][index],
                          "age_group": arrays["age_group"][index], "identity": identity}


def test_from_tfds_reads_labels_and_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="not built"):
        FaceSource.from_tfds(TinyFaces, "train", str(tmp_path))
    TinyFaces(data_dir=str(tmp_path)).download_and_prepare()
    source = FaceSource.from_tfds(TinyFaces, "train", str(tmp_path))
    arrays = make_flat_arrays(group_sizes=(3, 2, 2, 2, 2))
    # array_record keeps the generated order only up to shuffling: match by colour.
    order = decode_index(source.images(np.arange(len(source))).astype(np.float32))
    assert sorted(order.tolist()) == list(range(len(source)))
    np.testing.assert_array_equal(source.age_group, arrays["age_group"][order])
    np.testing.assert_array_equal(source.age, arrays["age"][order])
    names = [("" if i == 4 else f"person_{arrays['identity'][i]}") for i in order]
    decoded = [source.identity_names[code] if code >= 0 else "" for code in source.identity]
    assert decoded == names
    np.testing.assert_array_equal(source.images([2, 0]), arrays["image"][order[[2, 0]]])
    pipeline = gan_pipeline(source, batch_size=2, seed=0, image_size=6, alexnet_size=7)
    for step in range(3):
        # The pipeline decodes the encoded files in TF; `images` must agree with it.
        batch, plan = pipeline.batch_at(step), pipeline.plan.plan_at(step)
        assert (arrays["age_group"][from_unit_range(batch["real"])] == batch["target_group"]).all()
        expected = tf.compat.v1.image.resize_bilinear(
            source.images(plan["source_g_index"]), (7, 7), align_corners=False).numpy() - MEAN
        np.testing.assert_array_equal(batch["source_g_alexnet"], expected)
    with pytest.raises(ValueError, match="no identity"):
        classifier_pipeline(source, label="identity", batch_size=2, seed=0)


def test_load_faces_synthetic_is_identity_disjoint(monkeypatch):
    import ipcgan_jax.data.synthetic as synthetic

    calls = []

    def stand_in_make_dataset(num_identities, images_per_identity, *, size=128, seed=0):
        calls.append((num_identities, images_per_identity, size, seed))
        count = num_identities * images_per_identity
        return {"image": np.zeros((count, size, size, 3), np.uint8),
                "age": np.full(count, 30), "age_group": np.arange(count) % 5,
                "identity": np.repeat(np.arange(num_identities), images_per_identity)}

    # Whatever synthetic.py provides, this test checks only the split made by load_faces.
    monkeypatch.setattr(synthetic, "make_dataset", stand_in_make_dataset, raising=False)
    sources.synthetic_arrays.cache_clear()
    config = ml_collections.ConfigDict(dict(name="synthetic", num_identities=10,
                                            images_per_identity=5, size=8, seed=1,
                                            test_fraction=0.3))
    train, test = load_faces(config, "train"), load_faces(config, "test")
    assert len(train) == 35 and len(test) == 15
    assert calls == [(10, 5, 8, 1)]  # both splits (and later runs in this process) share one rendering
    assert not set(train.identity.tolist()) & set(test.identity.tolist())
    assert train.images([0]).shape == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="splits"):
        load_faces(config, "validation")
    sources.synthetic_arrays.cache_clear()  # drop the stand-in's arrays


def test_indices_of_groups_selects_rows_of_any_listed_group():
    groups = np.array([0, 3, 1, 0, 4, 1, 2])
    source = FaceSource.from_arrays({"image": np.zeros((7, 4, 4, 3), np.uint8), "age_group": groups,
                                     "identity": np.arange(7)})
    assert source.indices_of_groups((0,)).tolist() == [0, 3]
    assert source.indices_of_groups([1, 0]).tolist() == [0, 2, 3, 5]  # ascending, any order given
    assert source.indices_of_groups(()).size == 0
