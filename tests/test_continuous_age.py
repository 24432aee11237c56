"""Ages in years between the groups, and the ageing animation (API and photo CLI)."""
import io
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ipcgan_jax import age, continuous_age, inference
from ipcgan_jax.constants import AGE_GROUP_CENTRES, AGE_GROUP_LABELS
from ipcgan_jax.models.layers import group_weights
from tests.test_inference import photo_with_faces, synthetic_faces


@pytest.fixture(scope="module")
def ager():
    """The shipped real-face model: trained, so its faces follow the condition maps
    (an untrained G barely reacts to them), and cheap to load."""
    return inference.FaceAger.from_pretrained()


@pytest.fixture(scope="module")
def photo():
    return photo_with_faces([(synthetic_faces(1, 128)[0], (60, 100))])


def animation_frames(data: bytes) -> tuple[list[np.ndarray], list[int]]:
    """Every frame of an animation file (RGB) and its duration in ms."""
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for k in range(image.n_frames):
        image.seek(k)
        frames.append(np.asarray(image.convert("RGB")))
        durations.append(image.info["duration"])
    return frames, durations


def test_group_centres_are_the_middles_of_the_labelled_ranges():
    # From the label strings: "11-20" -> 15.5; "51+" gets the closed groups' width of 10.
    closed = [tuple(int(x) for x in label.split("-")) for label in AGE_GROUP_LABELS[:-1]]
    last_lower = int(AGE_GROUP_LABELS[-1].rstrip("+"))
    expected = [(lo + hi) / 2 for lo, hi in closed] + [last_lower + (closed[-1][1] - closed[-1][0]) / 2]
    assert AGE_GROUP_CENTRES == tuple(expected) == (15.5, 25.5, 35.5, 45.5, 55.5)


def test_age_condition_blends_the_two_nearest_groups():
    weights = continuous_age.age_condition([11, 15.5, 20, 25.5, 37, 50.5, 55.5, 60, 120])
    expected = np.zeros((9, 5), np.float32)
    expected[[0, 1], 0] = 1                 # at or below the first centre: 11-20 exactly
    expected[2, :2] = (0.55, 0.45)          # 20 is 4.5 of the 10 years from 15.5 to 25.5
    expected[3, 1] = 1
    expected[4, 2:4] = (0.85, 0.15)         # 37: 1.5 years past 35.5
    expected[5, 3:5] = (0.5, 0.5)
    expected[[6, 7, 8], 4] = 1              # at or above the last centre: 51+ exactly
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert continuous_age.age_condition(37).shape == (1, 5)
    for bad in (10, 121, float("nan"), []):
        with pytest.raises(ValueError, match="years in 11..120"):
            continuous_age.age_condition(bad)
    assert continuous_age.progression_ages(5) == (15.5, 25.5, 35.5, 45.5, 55.5)
    with pytest.raises(ValueError, match="at least 2 frames"):
        continuous_age.progression_ages(1)


def test_blended_group_weights_are_the_mix_of_the_one_hot_ones():
    weights = group_weights(jnp.asarray(continuous_age.age_condition([37, 20])), 5, jnp.float32)
    mix = 0.85 * group_weights(jnp.array([2]), 5, jnp.float32) + 0.15 * group_weights(jnp.array([3]), 5, jnp.float32)
    np.testing.assert_allclose(weights[0], mix[0], atol=1e-6)
    np.testing.assert_array_equal(group_weights(jnp.array([1, 4]), 5, jnp.float32),
                                  np.eye(5, dtype=np.float32)[[1, 4]])
    with pytest.raises(ValueError, match=r"group weights \(N, 5\)"):
        group_weights(jnp.ones((2, 4)), 5, jnp.float32)


def test_face_ager_ages_in_years(ager, photo):
    groups = ager.age(photo)
    at_centres = ager.age(photo, age=list(AGE_GROUP_CENTRES))
    np.testing.assert_array_equal(at_centres, groups)  # a centre is its group, pixel for pixel
    one = ager.age(photo, age=37)
    assert one.shape == (1, 64, 64, 3) and one.dtype == np.uint8
    several = ager.age(photo, age=[20.5, 37, 60])
    np.testing.assert_array_equal(several[1], one[0])
    np.testing.assert_array_equal(several[2], groups[4])
    # Midway between 11-20 and 21-30 is neither of them.
    assert np.abs(several[0].astype(int) - groups[0]).mean() > 1
    assert np.abs(several[0].astype(int) - groups[1]).mean() > 1
    face = ager.age_faces(photo, ages=[25, 37])[0]
    assert face.ages == (25.0, 37.0) and face.age_groups == () and face.paste_back(photo).shape == (2,) + photo.shape
    np.testing.assert_array_equal(ager.age(face.aligned, age=[25, 37], align=False), face.outputs)
    np.testing.assert_array_equal(ager.reage(face, [0, 4]).outputs, groups[[0, 4]])
    with pytest.raises(ValueError, match="not both"):
        ager.age(photo, [1], age=30)


def test_cli_ages_in_years_and_progression_animation(ager, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "me.png")
    out = tmp_path / "out"
    assert age.main([str(tmp_path / "me.png"), f"--out={out}", "--age", "25", "37.5",
                     "--paste-back", "--progression", "--frames", "6", "--duration", "1.2"]) == 0
    assert sorted(os.listdir(out)) == sorted([
        "me_grid.png", "me_25y.png", "me_37.5y.png", "me_25y_photo.png", "me_37.5y_photo.png",
        "me_progression.webp", "me_progression_strip.png", "me_progression_photo.webp"])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "me_37.5y.png")), ager.age(photo, age=37.5)[0])
    ends = ager.age_faces(photo, [0, 4])[0]
    frames, durations = animation_frames((out / "me_progression.webp").read_bytes())
    assert len(frames) == 6 and durations == [200] * 6
    assert all(frame.shape == (64, 64, 3) for frame in frames)
    np.testing.assert_array_equal(frames[0], ends.outputs[0])    # lossless: exactly 11-20 ...
    np.testing.assert_array_equal(frames[-1], ends.outputs[1])   # ... and exactly 51+
    expected_middle = ager.age(photo, age=continuous_age.progression_ages(6)[2])[0]
    np.testing.assert_array_equal(frames[2], expected_middle)
    photo_frames, _ = animation_frames((out / "me_progression_photo.webp").read_bytes())
    assert len(photo_frames) == 6 and photo_frames[0].shape == photo.shape
    np.testing.assert_array_equal(photo_frames[-1], ends.paste_back(photo)[1])
    strip = np.asarray(Image.open(out / "me_progression_strip.png"))
    assert strip.shape == (14 + 66 + 2, 6 * 66 + 2, 3)  # six 64 px tiles, 2 px apart, under titles
    np.testing.assert_array_equal(strip[16:80, 2:66], frames[0])


def test_cli_gif_progression_and_bad_requests(photo, tmp_path, capsys):
    Image.fromarray(photo).save(tmp_path / "me.png")
    out = tmp_path / "gif"
    assert age.main([str(tmp_path / "me.png"), f"--out={out}", "--groups", "0",
                     "--progression", "--frames", "3", "--animation-format", "gif"]) == 0
    frames, durations = animation_frames((out / "me_progression.gif").read_bytes())
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert durations == [round(4000 / 3, -1)] * 3  # the default 4 s; GIF keeps 10 ms steps
    for bad, message in ((["--age", "9"], "years in 11..120"), (["--progression", "--frames", "1"], "2 frames"),
                         (["--progression", "--duration", "0"], "must be positive")):
        with pytest.raises(SystemExit):  # argparse's usage error, naming the value
            age.main([str(tmp_path / "me.png"), f"--out={tmp_path / 'bad'}", *bad])
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):  # argparse: --groups and --age exclude each other
        age.main([str(tmp_path / "me.png"), "--groups", "1", "--age", "30"])
