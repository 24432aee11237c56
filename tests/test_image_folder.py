"""The image-folder builder on several read-only folders laid out like UTKFace's: one
dataset, a seeded split stratified by age group, and the build report."""

import csv
import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from ipcgan_jax.data import build  # noqa: E402
from ipcgan_jax.data.face_builder import REPORT_FILE_NAME, split_images_by_group  # noqa: E402

# Ages per folder, chosen so that every group 11-20 ... 51+ has a few faces in each, plus
# one child (below the minimum age) and one unreadable age.
FOLDER_AGES = {
    "utk_a": [12, 15, 19, 23, 27, 29, 33, 36, 44, 48, 55, 70, 8, "x"],
    "utk_b": [11, 17, 20, 21, 25, 30, 31, 39, 40, 41, 45, 50, 51, 62, 80],
}
GROUP_OF_AGE = {**{a: 0 for a in range(11, 21)}, **{a: 1 for a in range(21, 31)},
                **{a: 2 for a in range(31, 41)}, **{a: 3 for a in range(41, 51)},
                **{a: 4 for a in range(51, 100)}}


def _write_utk_folder(root, ages, seed):
    """labels.csv (file, age, gender, race, age_group) beside images/, as the shared data."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index, age in enumerate(ages):
        name = f"{age}_0_{index % 5}_2017{seed}{index:04d}.jpg.chip.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / "images" / name,
                                                                                format="JPEG")
        rows.append({"file": name, "age": age, "gender": index % 2, "race": index % 5,
                     "age_group": GROUP_OF_AGE.get(age, "")})
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "age", "gender", "race", "age_group"])
        writer.writeheader()
        writer.writerows(rows)
    return {f"{root.name}/{row['file']}": (row["age"], f"{row['gender']}_{row['race']}") for row in rows}


def _read_only(root):
    for folder, _, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), stat.S_IRUSR)
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)


def _all_files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, files in os.walk(root) for name in files)


@pytest.fixture(scope="module")
def utk_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    ages = {}
    attributes = {}
    for seed, (name, folder_ages) in enumerate(FOLDER_AGES.items()):
        for path, (age, gender_race) in _write_utk_folder(base / name, folder_ages, seed).items():
            ages[path], attributes[path] = age, gender_race
    listing = _all_files(base)
    _read_only(base)
    yield [base / name for name in FOLDER_AGES], ages, listing, attributes
    for folder, _, _ in os.walk(base):
        os.chmod(folder, stat.S_IRWXU)


def _examples(builder):
    return {split: [builder.as_data_source(split)[i] for i in range(len(builder.as_data_source(split)))]
            for split in ("train", "test")}


def _name(example):
    value = example["file_name"]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_stratified_split_sends_every_group_to_test():
    groups = np.repeat(np.arange(5), [3, 40, 20, 7, 30])
    is_test = split_images_by_group(groups, 0.2, seed=0)
    for group, expected in zip(range(5), [1, 8, 4, 1, 6]):  # round(0.2 n), at least one
        assert is_test[groups == group].sum() == expected
    np.testing.assert_array_equal(is_test, split_images_by_group(groups, 0.2, seed=0))
    assert not np.array_equal(is_test, split_images_by_group(groups, 0.2, seed=1))
    with pytest.raises(ValueError, match="test_fraction"):
        split_images_by_group(groups, 1.0, seed=0)


def test_command_builds_several_read_only_folders_into_one_dataset(utk_folders, tmp_path, capsys):
    folders, ages, listing, gender_race = utk_folders
    data_dir = tmp_path / "tfds"
    argv = ["image_folder", "--config=utkface", f"--manual_dir={folders[0]},{folders[1]}",
            f"--data_dir={data_dir}", "--aligned_size=32", "--test_fraction=0.25", "--num_workers=1"]
    assert build.main(argv) == 0
    assert "utkface_aligned_size32_test_fraction0.25" in capsys.readouterr().out
    assert _all_files(folders[0].parent) == listing  # nothing written next to the inputs

    builder = build.make_builder("image_folder", data_dir=str(data_dir), config="utkface",
                                 aligned_size=32, test_fraction=0.25)
    examples = _examples(builder)
    valid = {name for name, age in ages.items() if isinstance(age, int) and age >= 11}
    stored = {_name(e): e for items in examples.values() for e in items}
    assert set(stored) == valid  # both folders, names prefixed by their folder
    for name, example in stored.items():
        assert example["image"].shape == (32, 32, 3)
        assert example["age"] == ages[name] and example["age_group"] == GROUP_OF_AGE[ages[name]]
        identity = example["identity"].decode() if isinstance(example["identity"], bytes) else example["identity"]
        assert identity == gender_race[name]  # UTKFace has no identities: gender_race stands in
    test_groups = np.bincount([int(e["age_group"]) for e in examples["test"]], minlength=5)
    all_groups = np.bincount([GROUP_OF_AGE[ages[n]] for n in valid], minlength=5)
    np.testing.assert_array_equal(test_groups, np.maximum(np.round(0.25 * all_groups), 1))

    report = json.loads((builder.data_path / REPORT_FILE_NAME).read_text())
    assert report["split"] == {"by": "age_group", "test_fraction": 0.25, "seed": 0}
    assert report["manual_dirs"] == [str(f) for f in folders]
    assert report["aligned"] == {"align_faces": False, "template": "utkface", "size": 32}
    assert list(report["splits"]["test"]["examples_per_age_group"].values()) == test_groups.tolist()
    reasons = {e["file"]: e["reason"] for s in report["splits"].values() for e in s["skipped_files"]}
    assert {ages[name] for name in reasons} == {8, "x"}
    assert any("below the minimum age" in r for r in reasons.values())


def test_split_seed_changes_the_split_and_folder_names_must_differ(utk_folders, tmp_path):
    folders, _, _, _ = utk_folders
    tests = []
    for seed in (0, 0, 3):
        builder = build.make_builder("image_folder", data_dir=str(tmp_path / f"tfds{len(tests)}"),
                                     config="utkface", aligned_size=16, split_seed=seed,
                                     manual_dirs=[str(f) for f in folders], num_workers=1)
        builder.download_and_prepare()
        tests.append(sorted(_name(e) for e in _examples(builder)["test"]))
    assert tests[0] == tests[1] != tests[2]
    same_name = build.make_builder("image_folder", data_dir=str(tmp_path / "dup"), config="utkface",
                                   manual_dirs=[str(folders[0]), str(folders[0])], num_workers=1)
    with pytest.raises(ValueError, match="distinct folder names"):
        same_name.download_and_prepare()


def _write_rows(root, rows, header=("path", "age"), images=()):
    """A folder of 16x16 JPEGs `images` and labels.csv of `rows` (tuples in `header` order)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in images:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name, format="JPEG")
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return root


def _prealigned(folder, data_dir, config="prealigned"):
    return ["image_folder", f"--config={config}", f"--manual_dir={folder}", f"--data_dir={data_dir}",
            "--aligned_size=16", "--num_workers=1"]


def test_rebuild_into_a_data_dir_of_another_folder_is_refused_and_keeps_the_dataset(tmp_path, capsys):
    names = [f"{i}.jpg" for i in range(6)]
    first = _write_rows(tmp_path / "first", [(n, 20 + 5 * i) for i, n in enumerate(names)], images=names)
    second = _write_rows(tmp_path / "second", [(n, 20 + 5 * i) for i, n in enumerate(names)], images=names)
    data_dir = tmp_path / "tfds"
    assert build.main(_prealigned(first, data_dir)) == 0
    built = {path: open(os.path.join(data_dir, path), "rb").read() for path in _all_files(data_dir)}
    report = next(path for path in built if path.endswith(REPORT_FILE_NAME))
    assert json.loads(built[report])["manual_dirs"] == [str(first)]  # recorded for one folder too
    capsys.readouterr()

    assert build.main(_prealigned(first, data_dir)) == 0  # the same command again: nothing to do
    assert "built already" in capsys.readouterr().out
    assert build.main(_prealigned(second, data_dir)) == 1
    error = capsys.readouterr().err
    assert f"built from {first}" in error and f"nothing was read from {second}" in error
    assert {path: open(os.path.join(data_dir, path), "rb").read() for path in _all_files(data_dir)} == built


def test_rows_a_dataset_cannot_use_are_skipped_naming_the_reason(tmp_path):
    names = [f"{i}.jpg" for i in range(8)]
    rows = [(n, 20 + 5 * i, i % 2, i % 3) for i, n in enumerate(names)]
    rows[1] = (names[1], 200, 0, 0)  # a labelling error
    rows[2] = (names[2], 30, "", 1)  # no gender: no identity class
    rows.append(("adir", 40, 1, 1))  # a folder, not an image
    folder = _write_rows(tmp_path / "faces" / "images", rows, header=("file", "age", "gender", "race"),
                         images=names)
    (folder / "adir").mkdir()
    os.replace(folder / "labels.csv", folder.parent / "labels.csv")  # the utkface layout
    data_dir = tmp_path / "tfds"
    assert build.main(["image_folder", "--config=utkface", f"--manual_dir={folder.parent}",
                       f"--data_dir={data_dir}", "--aligned_size=16", "--num_workers=1"]) == 0
    report = json.loads(next((data_dir / "image_folder").rglob(REPORT_FILE_NAME)).read_text())
    reasons = {e["file"]: e["reason"] for s in report["splits"].values() for e in s["skipped_files"]}
    assert reasons == {names[1]: "age 200 above the oldest plausible age 120",
                       names[2]: "empty gender (the identity columns)",
                       "adir": "a folder, not an image file"}


@pytest.mark.parametrize("rows, message", [
    ([("0.jpg", 30), ("./0.jpg", 40)], "line 3: duplicate path './0.jpg' (the file of line 2)"),
    ([], "list(s) 0 image(s): too few for a 'train' and a 'test' split"),
    ([("0.jpg", 30)], "list(s) 1 image(s): too few"),
    ([("0.jpg", 5), ("1.jpg", "x"), ("2.jpg", 7), ("3.jpg", 9)],
     "none of its 3 image(s) is usable (0.jpg: age 5 is below the minimum age 11 of the first group; "
     "1.jpg: invalid age 'x'; 3.jpg: age 9"),
])
def test_metadata_no_dataset_can_come_from_is_one_line_naming_why(tmp_path, capsys, rows, message):
    folder = _write_rows(tmp_path / "faces", rows, images=["0.jpg", "1.jpg", "2.jpg", "3.jpg"])
    data_dir = tmp_path / "tfds"
    assert build.main(_prealigned(folder, data_dir)) == 1
    error = capsys.readouterr().err
    last_line = error.strip().splitlines()[-1]  # after the progress bars
    assert last_line.startswith("error: ") and message in last_line and "Traceback" not in error
    assert not list(data_dir.rglob("*.array_record*")), "no dataset is left behind"
