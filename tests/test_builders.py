"""CACD and ImageFolder TFDS builders on tiny fake folders with awkward files, real dlib."""

import csv
import json
import struct
import zlib

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from ipcgan_jax.constants import AGE_GROUP_LABELS, NUM_AGE_GROUPS
from ipcgan_jax.data import synthetic
from ipcgan_jax.data.age_groups import age_group_labels, age_to_group
from ipcgan_jax.data.alignment import FaceAligner
from ipcgan_jax.data.cacd import Cacd
from ipcgan_jax.data.face_builder import (
    REPORT_FILE_NAME,
    AlignedFaceBuilderConfig,
    split_identities,
    split_images,
)
from ipcgan_jax.data.image_folder import ImageFolder, ImageFolderConfig

# Real CACD celebrities (identity, name, birth year) and photo years.
CELEBRITIES = [(1, "Robin_Williams", 1951), (2, "Mark_Hamill", 1951), (3, "Kevin_Bacon", 1958),
               (4, "Jennifer_Aniston", 1969), (5, "Keira_Knightley", 1985), (6, "Jesse_Eisenberg", 1983)]
PHOTO_YEARS = (2004, 2008, 2011, 2013)
FACE_SIZE = 200
# Expected groups written out independently of age_to_group (docs/faithfulness.md §2).
GROUP_OF_AGE = {**{a: 0 for a in range(11, 21)}, **{a: 1 for a in range(21, 31)},
                **{a: 2 for a in range(31, 41)}, **{a: 3 for a in range(41, 51)},
                **{a: 4 for a in range(51, 100)}}


def test_age_groups_follow_spec():
    for age, group in GROUP_OF_AGE.items():
        assert age_to_group(age) == group
    assert age_group_labels() == ("11-20", "21-30", "31-40", "41-50", "51+")
    # the labels shown everywhere are the ones the default boundaries give
    assert age_group_labels() == AGE_GROUP_LABELS and len(AGE_GROUP_LABELS) == NUM_AGE_GROUPS
    with pytest.raises(ValueError, match="below the minimum age"):
        age_to_group(10)
    assert age_to_group(25, boundaries=(18, 40)) == 1


def test_splits_are_seeded_and_disjoint():
    identities = [f"person{i}" for i in range(50)]
    test = split_identities(identities, 0.2, seed=3)
    assert len(test) == 10 and test == split_identities(identities[::-1], 0.2, seed=3)
    assert test != split_identities(identities, 0.2, seed=4)
    is_test = split_images(40, 0.25, seed=1)
    assert is_test.sum() == 10 and np.array_equal(is_test, split_images(40, 0.25, seed=1))


def _write_png16_rgb(path, rgb16):
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _write_face(path, face, kind):
    """Writes `face` (uint8 RGB) in one of the awkward formats; kind 'normal' is a plain JPEG."""
    if kind == "normal":
        Image.fromarray(face).save(path, format="JPEG", quality=92)
    elif kind == "truncated":
        Image.fromarray(face).save(path, format="JPEG", quality=92)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        path.write_text("<html>404 not found</html>\n")
    elif kind == "no_face":
        ramp = np.linspace(40, 200, face.shape[1]).astype(np.uint8)
        Image.fromarray(np.broadcast_to(ramp[None, :, None], face.shape).copy()).save(path, format="JPEG")
    elif kind == "cmyk":
        Image.fromarray(face).convert("CMYK").save(path, format="JPEG", quality=92)
    elif kind == "png16":
        _write_png16_rgb(path, face.astype(np.uint16) * 257)
    elif kind == "gray":
        Image.fromarray(face).convert("L").save(path, format="JPEG", quality=92)
    elif kind == "alpha":
        alpha = np.full(face.shape[:2], 255, np.uint8)
        alpha[:20, :20] = 0
        Image.fromarray(np.dstack([face, alpha]), mode="RGBA").save(path, format="PNG")
    elif kind == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # display needs a 90 degree clockwise turn
        Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(
            path, format="JPEG", quality=92, exif=exif.tobytes())
    elif kind != "missing":
        raise AssertionError(kind)


# One awkward file per (identity index, image index); every other file is a plain JPEG.
SPECIAL_KINDS = {(0, 0): "truncated", (1, 0): "not_an_image", (2, 0): "no_face", (3, 0): "missing",
                 (4, 0): "cmyk", (4, 1): "png16", (5, 0): "gray", (5, 1): "alpha", (5, 2): "exif_rotated"}
EXPECTED_SKIPS = {"truncated": "truncated", "not_an_image": "not a recognised image",
                  "no_face": "no face found", "missing": "does not exist"}


def _faces(num_identities, per_identity, ages):
    identities = synthetic.sample_identities(num_identities, seed=11)
    rows = np.repeat(np.arange(num_identities), per_identity)
    groups = np.array([GROUP_OF_AGE[a] for a in ages])
    return synthetic.render_faces(identities.take(rows), groups, size=FACE_SIZE, nuisance_seed=7)


@pytest.fixture(scope="module")
def fake_cacd(tmp_path_factory):
    root = tmp_path_factory.mktemp("cacd_manual")
    (root / "CACD2000").mkdir()
    names, ages, identities, kinds = [], [], [], {}
    for person, (identity, name, birth) in enumerate(CELEBRITIES):
        for image_index, year in enumerate(PHOTO_YEARS):
            age = year - birth
            file_name = f"{age}_{name}_{image_index + 1:04d}.jpg"
            names.append(file_name)
            ages.append(age)
            identities.append(identity)
            kinds[file_name] = SPECIAL_KINDS.get((person, image_index), "normal")
    for file_name, face in zip(names, _faces(len(CELEBRITIES), len(PHOTO_YEARS), ages)):
        _write_face(root / "CACD2000" / file_name, face, kinds[file_name])

    def column(values, dtype):
        return np.array(values, dtype=dtype).reshape(-1, 1)

    def strings(values):
        cells = np.empty((len(values), 1), dtype=object)
        for i, value in enumerate(values):
            cells[i, 0] = np.array([value])
        return cells

    image_data = {"age": column(ages, np.uint8), "identity": column(identities, np.uint16),
                  "year": column(np.tile(PHOTO_YEARS, len(CELEBRITIES)), np.uint16),
                  "feature": np.zeros((0, 0), np.uint8), "rank": column(identities, np.uint8),
                  "lfw": column([0] * len(names), np.uint8),
                  "birth": column([b for _, _, b in CELEBRITIES for _ in PHOTO_YEARS], np.uint16),
                  "name": strings(names)}
    celebrity_data = {"name": strings([n for _, n, _ in CELEBRITIES]),
                      "identity": column([i for i, _, _ in CELEBRITIES], np.int32),
                      "birth": column([b for _, _, b in CELEBRITIES], np.int32),
                      "rank": column([i for i, _, _ in CELEBRITIES], np.int32),
                      "lfw": column([1] * len(CELEBRITIES), np.int32)}
    scipy.io.savemat(root / "celebrity2000_meta.mat",
                     {"celebrityData": celebrity_data, "celebrityImageData": image_data})
    return root, dict(zip(names, zip(ages, identities))), kinds


def _build(builder, manual_dir):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    examples = {}
    for split in ("train", "test"):
        source = builder.as_data_source(split)
        examples[split] = [source[i] for i in range(len(source))]
    report = json.loads((builder.data_path / REPORT_FILE_NAME).read_text())
    return examples, report


def _as_str(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def test_cacd_builder(fake_cacd, tmp_path, capsys):
    manual_dir, truth, kinds = fake_cacd
    config = AlignedFaceBuilderConfig(name="test_identity", aligned_size=64, test_fraction=0.34,
                                      split_by="identity", split_seed=0)
    builder = Cacd(config=config, data_dir=str(tmp_path), num_workers=2)
    examples, report = _build(builder, manual_dir)

    stored = {split: {_as_str(e["file_name"]): e for e in items} for split, items in examples.items()}
    kept = {**stored["train"], **stored["test"]}
    expected_kept = {name for name, kind in kinds.items() if kind not in EXPECTED_SKIPS}
    assert set(kept) == expected_kept  # every awkward-but-valid format made it in
    for name, example in kept.items():
        age, identity = truth[name]
        assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
        assert example["age"] == age and example["identity"] == identity
        assert example["age_group"] == GROUP_OF_AGE[age]
        assert _as_str(example["name"]) == dict((i, n) for i, n, _ in CELEBRITIES)[identity]

    train_ids = {int(e["identity"]) for e in stored["train"].values()}
    test_ids = {int(e["identity"]) for e in stored["test"].values()}
    assert train_ids and test_ids and not train_ids & test_ids

    skipped = {entry["file"]: entry["reason"] for split in report["splits"].values()
               for entry in split["skipped_files"]}
    assert set(skipped) == {n for n, k in kinds.items() if k in EXPECTED_SKIPS}
    for name, reason in skipped.items():
        assert EXPECTED_SKIPS[kinds[name]] in reason
    assert sum(s["examples"] for s in report["splits"].values()) == len(kept)
    assert "skipped" in capsys.readouterr().out

    # The EXIF-rotated file was turned upright before alignment: its crop matches the
    # alignment of the upright drawn face (dlib finds no sideways face at all).
    exif_name = next(n for n, k in kinds.items() if k == "exif_rotated")
    upright_face = _faces(len(CELEBRITIES), len(PHOTO_YEARS), [truth[n][0] for n in kinds])[
        list(kinds).index(exif_name)]
    reference = FaceAligner(output_size=64).align(upright_face).image.astype(float)
    assert np.abs(kept[exif_name]["image"].astype(float) - reference).mean() < 12


def _write_folder(root, with_identity):
    ages = [15, 19, 24, 28, 33, 38, 44, 47, 52, 60, 8, "abc"]
    faces = _faces(len(ages), 1, [a if isinstance(a, int) and a >= 11 else 30 for a in ages])
    rows = []
    for index, (age, face) in enumerate(zip(ages, faces)):
        relative = f"sub{index % 2}/img_{index}.{'png' if index == 3 else 'jpg'}"
        (root / relative).parent.mkdir(exist_ok=True)
        Image.fromarray(face).save(root / relative)
        rows.append({"path": relative, "age": age, "identity": f"p{index // 2}"})
    (root / "sub0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    rows.append({"path": "sub0/broken.jpg", "age": 30, "identity": "p9"})
    with open(root / "labels.csv", "w", newline="") as handle:
        fields = ["path", "age", "identity"] if with_identity else ["path", "age"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return {r["path"]: r for r in rows}


def test_image_folder_builder_aligned_identity_split(tmp_path):
    manual_dir = tmp_path / "folder"
    manual_dir.mkdir()
    rows = _write_folder(manual_dir, with_identity=True)
    config = ImageFolderConfig(name="test_aligned", aligned_size=64, test_fraction=0.3,
                               age_group_boundaries=(20, 30, 40, 50))
    examples, report = _build(ImageFolder(config=config, data_dir=str(tmp_path / "tfds"), num_workers=1),
                              manual_dir)
    kept = {_as_str(e["file_name"]): e for items in examples.values() for e in items}
    assert set(kept) == {p for p, r in rows.items() if isinstance(r["age"], int) and r["age"] >= 11
                         and "broken" not in p}
    for path, example in kept.items():
        assert example["age_group"] == GROUP_OF_AGE[rows[path]["age"]]
        assert _as_str(example["identity"]) == rows[path]["identity"]
    train_ids = {_as_str(e["identity"]) for e in examples["train"]}
    test_ids = {_as_str(e["identity"]) for e in examples["test"]}
    assert train_ids and test_ids and not train_ids & test_ids
    reasons = {e["file"]: e["reason"] for s in report["splits"].values() for e in s["skipped_files"]}
    assert set(reasons) == {"sub0/img_10.jpg", "sub1/img_11.jpg", "sub0/broken.jpg"}
    assert "below the minimum age" in reasons["sub0/img_10.jpg"]
    assert "invalid age" in reasons["sub1/img_11.jpg"]


def test_image_folder_prealigned_without_identity(tmp_path):
    manual_dir = tmp_path / "folder"
    manual_dir.mkdir()
    rows = _write_folder(manual_dir, with_identity=False)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 200  # a non-square "aligned crop": the centre square is kept
    Image.fromarray(wide).save(manual_dir / "sub0" / "img_0.jpg")
    config = ImageFolderConfig(name="test_prealigned", aligned_size=32, align_faces=False,
                               test_fraction=0.25, split_seed=5)
    examples, report = _build(ImageFolder(config=config, data_dir=str(tmp_path / "tfds"), num_workers=2),
                              manual_dir)
    valid = [p for p, r in rows.items() if isinstance(r["age"], int) and r["age"] >= 11 and "broken" not in p]
    assert len(examples["train"]) + len(examples["test"]) == len(valid)
    is_test = split_images(len(rows), 0.25, seed=5)  # per image, in CSV order, before skipping
    expected_test = {p for p, test in zip(rows, is_test) if test and p in valid}
    assert {_as_str(e["file_name"]) for e in examples["test"]} == expected_test
    crop = next(e["image"] for items in examples.values() for e in items
                if _as_str(e["file_name"]) == "sub0/img_0.jpg")
    assert crop.shape == (32, 32, 3) and crop[4:28, 4:28].min() > 170
    assert all(_as_str(e["identity"]) == "" for items in examples.values() for e in items)


def test_face_crop_workers_die_on_sigterm_despite_an_inherited_handler(tmp_path):
    """Pool.terminate stops idle workers with SIGTERM while holding their queue's lock; a
    worker forked from a process that catches SIGTERM (a training loop, a library) would
    outlive it and hang the build. Each worker records its SIGTERM disposition (through
    the aligner factory, which runs in the worker); run in a subprocess that catches
    SIGTERM, with a timeout instead of a hang."""
    import subprocess
    import sys
    import textwrap
    for index in range(6):
        Image.fromarray(np.full((40, 40, 3), 40 * index, np.uint8)).save(tmp_path / f"face{index}.png")
    script = textwrap.dedent(f"""
        import glob, os, signal
        from ipcgan_jax.data.face_crops import prepare_face_crops
        def record_disposition(output_size):
            with open(os.path.join({str(tmp_path)!r}, f"worker{{os.getpid()}}.txt"), "w") as f:
                f.write(str(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL))
            return None  # no aligner: the files are crops already
        signal.signal(signal.SIGTERM, lambda *_: None)
        paths = sorted(glob.glob({str(tmp_path)!r} + "/*.png"))
        results = list(prepare_face_crops(paths, output_size=16, aligner_factory=record_disposition, num_workers=2))
        assert [r.image.shape for r in results] == [(16, 16, 3)] * 6, results
        print("built", len(results))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "built 6" in done.stdout, done.stderr[-2000:]
    dispositions = [path.read_text() for path in tmp_path.glob("worker*.txt")]
    assert dispositions == ["True", "True"], dispositions
