"""Tests of the procedural aging faces (ipcgan_jax.data.synthetic) and their TFDS builder."""

import dlib
import face_recognition_models
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ipcgan_jax.data import synthetic
from ipcgan_jax.data.age_groups import age_to_group
from ipcgan_jax.data.synthetic_tfds import SyntheticAging, SyntheticAgingConfig

SIZE = 64


def _luminance(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_same_seed_same_bytes_and_other_seeds_differ():
    first = synthetic.sample_identities(4, seed=1)
    again = synthetic.sample_identities(4, seed=1)
    other = synthetic.sample_identities(4, seed=2)
    for name, value in first.as_dict().items():
        np.testing.assert_array_equal(value, again.as_dict()[name])
    assert not np.allclose(first.skin_rgb, other.skin_rgb)
    groups = np.array([0, 1, 3, 4])
    images = synthetic.render_faces(first, groups, size=SIZE, nuisance_seed=3)
    assert images.tobytes() == synthetic.render_faces(again, groups, size=SIZE, nuisance_seed=3).tobytes()
    assert images.tobytes() != synthetic.render_faces(first, groups, size=SIZE, nuisance_seed=4).tobytes()
    assert images.tobytes() != synthetic.render_faces(other, groups, size=SIZE, nuisance_seed=3).tobytes()
    # Per-image seeds: an image depends on its own seed only, not on its batch.
    seeds = np.array([11, 12, 13, 14])
    batch = synthetic.render_faces(first, groups, size=SIZE, nuisance_seed=seeds)
    alone = synthetic.render_faces(first.take([2]), groups[2:3], size=SIZE, nuisance_seed=seeds[2:3])
    np.testing.assert_array_equal(batch[2:3], alone)


def test_shapes_dtypes_broadcasting_and_bad_input():
    identities = synthetic.sample_identities(3, seed=0)
    for size in (40, 96):
        images = synthetic.render_faces(identities, np.array([0, 2, 4]), size=size)
        assert images.shape == (3, size, size, 3) and images.dtype == np.uint8
    one = synthetic.render_faces(identities.take([1]), np.arange(5), size=SIZE)
    assert one.shape == (5, SIZE, SIZE, 3)
    np.testing.assert_array_equal(one[2], synthetic.render_faces(identities, np.array([0, 2, 0]), size=SIZE)[1])
    landmarks = synthetic.face_landmarks(identities, np.array([0, 2, 4]), size=SIZE, nuisance_seed=1)
    assert landmarks.shape == (3, 5, 2) and landmarks.dtype == np.float32
    with pytest.raises(ValueError, match="age_group"):
        synthetic.render_faces(identities, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match="rows"):
        synthetic.render_faces(identities, np.array([0, 1]))
    with pytest.raises(ValueError, match="nuisance_seed"):
        synthetic.render_faces(identities, np.array([0, 1, 2]), nuisance_seed=np.array([1, 2]))


def test_age_acts_only_on_age_regions_and_identities_differ():
    identities = synthetic.sample_identities(8, seed=4)
    young = synthetic.render_faces(identities, np.zeros(8, int), size=SIZE).astype(np.float64)
    old = synthetic.render_faces(identities, np.full(8, 4), size=SIZE).astype(np.float64)
    landmarks = synthetic.face_landmarks(identities, np.zeros(8, int), size=SIZE)
    for index in range(8):
        # A cheek patch below the outer eye corner, between eye bags and the nasolabial fold:
        # only the skin's slight darkening acts there.
        x = int(round((landmarks[index, 0, 0] + landmarks[index, 1, 0]) / 2))
        y = int(round(0.35 * landmarks[index, 0, 1] + 0.65 * landmarks[index, 4, 1]))
        cheek = np.s_[y - 1:y + 2, x - 1:x + 2]
        cheek_change = np.abs(old[index][cheek] - young[index][cheek]).mean()
        assert cheek_change < 20, (index, cheek_change)
        # The top of the head (hair greys or recedes) and the forehead (lines) change more.
        top = np.s_[0:3, SIZE // 2 - 6:SIZE // 2 + 6]
        assert np.abs(old[index][top] - young[index][top]).mean() > cheek_change + 8
    # Identity dominates a one-group age step: nearest neighbours across groups 1 and 2 match.
    identities = synthetic.sample_identities(20, seed=8)
    first = synthetic.render_faces(identities, np.full(20, 1), size=32).reshape(20, -1).astype(np.float64)
    second = synthetic.render_faces(identities, np.full(20, 2), size=32).reshape(20, -1).astype(np.float64)
    distance = ((first[:, None] - second[None]) ** 2).sum(-1)
    assert (distance.argmin(1) == np.arange(20)).mean() >= 0.9
    assert distance[~np.eye(20, dtype=bool)].min() > 0


def test_aging_is_monotone_and_visible():
    identities = synthetic.sample_identities(12, seed=6)
    rows = np.repeat(np.arange(12), 5)
    groups = np.tile(np.arange(5), 12)
    images = synthetic.render_faces(identities.take(rows), groups, size=SIZE).reshape(12, 5, SIZE, SIZE, 3)
    images = images.astype(np.float64)
    # Distance from the teenage face grows with every group, averaged over identities.
    distance = np.abs(images - images[:, :1]).mean(axis=(0, 2, 3, 4))
    assert np.all(np.diff(distance) > 1.0), distance
    # Greying and receding hair lighten the top of the head, group after group.
    top = _luminance(images[:, :, 0:3, SIZE // 2 - 8:SIZE // 2 + 8]).mean(axis=(0, 2, 3))
    assert np.all(np.diff(top) > 2.0), top
    # Wrinkles: the forehead above the brows gets more high-frequency detail (fringes hide it).
    landmarks = synthetic.face_landmarks(identities.take(rows), groups, size=SIZE).reshape(12, 5, 5, 2)
    eye_y = np.round(landmarks[:, 0, 0, 1]).astype(int)
    bare = np.flatnonzero(identities.hair_style != synthetic.HAIR_STYLES.index("fringe"))
    forehead = np.stack([images[i, :, eye_y[i] - 11:eye_y[i] - 6, SIZE // 2 - 6:SIZE // 2 + 6] for i in bare])
    detail = np.abs(np.diff(_luminance(forehead), axis=2)).mean(axis=(0, 2, 3))
    assert min(detail[3:]) > detail[2] > detail[1] > detail[0], detail
    np.testing.assert_array_less(
        synthetic.AGE_ATTRIBUTES["greying"][:-1], synthetic.AGE_ATTRIBUTES["greying"][1:])


def test_landmarks_sit_on_the_drawn_eyes_and_nose():
    identities = synthetic.sample_identities(6, seed=2)
    groups = np.arange(6) % 5
    for seed in (None, 9):
        images = synthetic.render_faces(identities, groups, size=SIZE, nuisance_seed=seed)
        landmarks = synthetic.face_landmarks(identities, groups, size=SIZE, nuisance_seed=seed)
        assert np.all((landmarks >= 0) & (landmarks <= SIZE - 1))
        luminance = _luminance(images)
        for index in range(6):
            points = landmarks[index]
            assert points[0, 0] > points[1, 0] > points[3, 0] > points[2, 0]  # image-right eye first
            for outer, inner in ((0, 1), (2, 3)):
                x, y = np.round((points[outer] + points[inner]) / 2).astype(int)
                # The pupil at the eye's centre is far darker than the cheek below it.
                cheek_y = int(round(y + 0.5 * (points[4, 1] - y)))
                assert luminance[index, y, x] < 0.6 * luminance[index, cheek_y, x] - 10
            # The nose base lies on the dark underside of the nose, between the eyes in x.
            x, y = np.round(points[4]).astype(int)
            assert points[3, 0] < points[4, 0] < points[1, 0]
            assert luminance[index, y - 1:y + 2, x].min() < luminance[index, y - 3:y - 1, x].max() - 10


def test_dlib_finds_the_faces_and_agrees_with_the_landmarks():
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    identities = synthetic.sample_identities(5, seed=12)
    groups = np.arange(5)
    size = 128
    images = synthetic.render_faces(identities, groups, size=size, nuisance_seed=2)
    truth = synthetic.face_landmarks(identities, groups, size=size, nuisance_seed=2)
    for image, expected in zip(images, truth):
        boxes = detector(image, 1)
        assert len(boxes) == 1
        shape = predictor(image, boxes[0])
        found = np.array([(point.x, point.y) for point in shape.parts()], np.float64)
        # dlib's own model, trained on real faces, lands within 5% of the image side.
        assert np.abs(found - expected).max() < 0.05 * size, np.abs(found - expected)


def test_make_dataset_is_balanced_and_matches_render_faces():
    data = synthetic.make_dataset(10, 3, size=32, seed=5)
    assert data["image"].shape == (30, 32, 32, 3) and data["image"].dtype == np.uint8
    assert np.bincount(data["age_group"], minlength=5).tolist() == [6] * 5
    for group, (low, high) in enumerate(synthetic.AGE_GROUP_YEARS):
        ages = data["age"][data["age_group"] == group]
        assert ages.min() >= low and ages.max() <= high
    assert [age_to_group(age) for age in data["age"]] == data["age_group"].tolist()  # the datasets' rule
    for identity in range(10):
        assert len(set(data["age_group"][data["identity"] == identity].tolist())) == 3
    identities = synthetic.IdentityAttributes.from_dict(data, "identity_attributes/")
    assert len(identities) == 10
    rows = np.array([0, 7, 29])
    redrawn = synthetic.render_faces(identities.take(data["identity"][rows]), data["age_group"][rows],
                                     size=32, nuisance_seed=data["nuisance_seed"][rows])
    np.testing.assert_array_equal(redrawn, data["image"][rows])
    again = synthetic.make_dataset(10, 3, size=32, seed=5)
    np.testing.assert_array_equal(again["image"], data["image"])
    assert not np.array_equal(synthetic.make_dataset(10, 3, size=32, seed=6)["image"], data["image"])


def test_tfds_builder_builds_identity_disjoint_splits(tmp_path):
    config = SyntheticAgingConfig(name="tiny", num_identities=6, images_per_identity=2, size=32,
                                  seed=3, test_fraction=0.3)
    builder = SyntheticAging(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    splits = {name: list(tfds.as_numpy(builder.as_dataset(split=name))) for name in ("train", "test")}
    assert len(splits["train"]) + len(splits["test"]) == 12 and len(splits["test"]) == 4
    identities = {name: {int(e["identity"]) for e in examples} for name, examples in splits.items()}
    assert not identities["train"] & identities["test"]
    assert identities["train"] | identities["test"] == set(range(6))
    reference = synthetic.make_dataset(6, 2, size=32, seed=3)
    for example in splits["train"] + splits["test"]:
        matches = np.flatnonzero((reference["image"] == example["image"]).all(axis=(1, 2, 3)))
        assert len(matches) == 1
        row = matches[0]
        assert int(example["identity"]) == reference["identity"][row]
        assert int(example["age_group"]) == reference["age_group"][row]
        assert int(example["age"]) == reference["age"][row]
