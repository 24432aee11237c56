"""Ageing photos: loading runs, batch independence, BN modes, the CLI and photo edge cases."""
import hashlib
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ipcgan_jax import age, checkpointing, gan, inference, visualization
from ipcgan_jax.runlib import workdir as workdir_lib
from ipcgan_jax.data import framing, synthetic
from tests.helpers import tiny_gan_config

STEP = 3


def make_gan_workdir(path) -> str:
    """A GAN run's workdir as the trainer leaves it (config.json + a checkpoint), made
    without training: fresh weights, and moving statistics from a few train-mode passes
    over synthetic faces so that every BN (residual ones included) has them."""
    config = tiny_gan_config()
    workdir = str(path)
    workdir_lib.prepare_workdir(config, workdir)
    state = gan.init_state(config, jax.random.key(0))
    generator = gan.build_generator(config)
    identities = synthetic.sample_identities(4, seed=11)
    size = config.data.image_size
    stats = state.g_batch_stats
    for seed in range(2):
        faces = synthetic.render_faces(identities, np.zeros(4, int), size=size, nuisance_seed=seed)
        g_input = jnp.asarray(faces, jnp.float32) - jnp.asarray((104.0, 117.0, 124.0))
        _, new = generator.apply({"params": state.g_params, "batch_stats": stats}, g_input,
                                 jnp.arange(4) % 5, train=True, mutable=["batch_stats"])
        stats = new["batch_stats"]
    state = state.replace(g_batch_stats=stats, step=jnp.asarray(STEP, jnp.int32))
    checkpointer = checkpointing.TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep_last=2,
                                                   keep_every=0, async_save=False)
    checkpointer.save(STEP, state, {"next_step": STEP, "seed": 0})
    checkpointer.close()
    return workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_gan_workdir(tmp_path_factory.mktemp("gan") / "run")


@pytest.fixture(scope="module")
def ager(workdir):
    return inference.FaceAger.from_checkpoint(workdir)


def synthetic_faces(count: int, size: int, seed: int = 5) -> np.ndarray:
    identities = synthetic.sample_identities(count, seed)
    return synthetic.render_faces(identities, np.zeros(count, int), size=size, nuisance_seed=seed)


def photo_with_faces(faces_and_corners, shape=(300, 360)) -> np.ndarray:
    photo = np.full(shape + (3,), 70, np.uint8)
    photo[:, :, 2] = 120
    for face, (top, left) in faces_and_corners:
        photo[top:top + face.shape[0], left:left + face.shape[1]] = face
    return photo


# ----------------------------------------------------------------------------- loading
def test_loads_workdir_step_folder_and_export_alike(workdir, ager, tmp_path):
    crops = synthetic_faces(2, 48)
    expected = ager.age_aligned(crops)
    assert expected.shape == (2, 5, 32, 32, 3) and expected.dtype == np.uint8
    from_step = inference.FaceAger.from_checkpoint(os.path.join(workdir, "checkpoints", str(STEP)))
    np.testing.assert_array_equal(from_step.age_aligned(crops), expected)
    # An exported generator (the convert CLI's format): shapes inferred from its params.
    export = tmp_path / "generator"
    checkpointing.save_variables(str(export), ager.loaded.variables, {"network": "generator"})
    from_export = inference.FaceAger.from_checkpoint(str(export), image_size=32, aligned_size=48)
    assert from_export.loaded.generator.base_features == 4 and from_export.loaded.generator.num_res_blocks == 2
    np.testing.assert_array_equal(from_export.age_aligned(crops), expected)


def test_bad_paths_and_groups_have_clear_errors(ager, tmp_path):
    with pytest.raises(inference.NotAGeneratorError, match="does not exist"):
        inference.FaceAger.from_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(inference.NotAGeneratorError, match="config.json not found.*nor an exported generator"):
        inference.FaceAger.from_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="age groups"):
        ager.age_aligned(synthetic_faces(1, 48), [5])


# ----------------------------------------------------------------------------- BN
@pytest.mark.parametrize("bn_mode", ["moving", "single"])
def test_output_does_not_depend_on_other_faces(ager, bn_mode):
    one = inference.FaceAger(ager.loaded, bn_mode=bn_mode)
    faces = synthetic_faces(5, 48)
    alone = one.age_aligned(faces[:1], [1, 3])
    among_others = one.age_aligned(faces[[3, 0, 4, 2]], [1, 3])[1]
    other_groups = one.age_aligned(faces[:1], [3])[0]
    np.testing.assert_array_equal(alone[0], among_others)
    np.testing.assert_array_equal(alone[0, 1], other_groups[0])


def test_batch_statistics_would_mix_faces(ager):
    """The original's defect, for contrast: in training mode the same face changes with its batch."""
    generate = jax.jit(gan.make_generate(tiny_gan_config(), train_mode_bn=True))
    g_input = ager.to_generator_input(synthetic_faces(4, 48))
    groups = jnp.zeros((4,), jnp.int32)
    alone = generate(ager.loaded.variables, g_input[:1], groups[:1])
    batched = generate(ager.loaded.variables, g_input, groups)
    assert float(jnp.max(jnp.abs(alone[0] - batched[0]))) > 1e-3


def test_bn_modes_read_the_residual_statistics_only_in_moving_mode(ager):
    faces = synthetic_faces(1, 48)
    variables = jax.tree.map(np.array, ager.loaded.variables)
    variables["batch_stats"]["unit_0"]["bn1"]["mean"] += 0.5
    shifted = inference.LoadedGenerator(**{**ager.loaded.__dict__, "variables": variables})
    for bn_mode, should_change in (("moving", True), ("single", False)):
        before = inference.FaceAger(ager.loaded, bn_mode=bn_mode).age_aligned(faces)
        after = inference.FaceAger(shifted, bn_mode=bn_mode).age_aligned(faces)
        assert (not np.array_equal(before, after)) == should_change, bn_mode
    untracked = jax.tree.map(np.array, ager.loaded.variables)
    untracked["batch_stats"]["unit_1"]["bn2"]["num_updates"] = np.zeros((), np.float32)
    never_updated = inference.LoadedGenerator(**{**ager.loaded.__dict__, "variables": untracked})
    assert inference.FaceAger(never_updated).bn_mode == "single"
    with pytest.raises(ValueError, match="no moving averages"):
        inference.FaceAger(never_updated, bn_mode="moving")


# ----------------------------------------------------------------------------- photos
def test_photo_api_largest_face_all_faces_paste_back(ager):
    big, small = synthetic_faces(2, 128)[0], synthetic_faces(2, 96, seed=8)[1]
    photo = photo_with_faces([(small, (20, 20)), (big, (150, 200))], shape=(300, 360))
    faces = ager.age_faces(photo, [0, 4], all_faces=True)
    assert len(faces) == 2
    assert faces[0].box[0] > 150  # largest first: the big face on the right
    np.testing.assert_array_equal(ager.age(photo, [0, 4]), faces[0].outputs)
    pasted = faces[0].paste_back(photo)
    assert pasted.shape == (2,) + photo.shape
    np.testing.assert_array_equal(pasted[:, :100, :150], np.broadcast_to(photo[:100, :150], (2, 100, 150, 3)))
    assert np.abs(pasted[0, 180:260, 230:310].astype(int) - photo[180:260, 230:310]).mean() > 1
    # Already-aligned input: the same crop gives the same result without detection.
    np.testing.assert_array_equal(ager.age(faces[0].aligned, [0, 4], align=False), faces[0].outputs)


def test_array_inputs_grayscale_rgba_and_errors(ager):
    face = synthetic_faces(1, 128)[0]
    photo = photo_with_faces([(face, (60, 100))])
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    assert ager.age(gray, [2]).shape == (1, 32, 32, 3)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(ager.age(rgba, [2]), ager.age(photo, [2]))
    with pytest.raises(inference.FaceNotFoundError, match="no face"):
        ager.age(np.full((200, 200, 3), 90, np.uint8))
    tiny = photo_with_faces([(synthetic_faces(1, 64)[0], (100, 100))])
    with pytest.raises(inference.FaceTooSmallError, match="too small.*at least 40 px"):
        ager.age(tiny)


def _hash_tree(folder) -> dict:
    return {os.path.relpath(os.path.join(root, name), folder):
            hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
            for root, _, names in os.walk(folder) for name in names}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    big, other = synthetic_faces(2, 128)
    Image.fromarray(photo_with_faces([(big, (60, 100))])).save(folder / "face.png")
    Image.fromarray(photo_with_faces([(big, (150, 200)), (synthetic_faces(1, 110, seed=9)[0], (10, 10))])
                    ).save(folder / "two_faces.jpg", quality=95)
    Image.fromarray(photo_with_faces([])).save(folder / "no_face.png")
    Image.fromarray(photo_with_faces([(synthetic_faces(1, 64)[0], (100, 100))])).save(folder / "tiny.png")
    Image.fromarray(photo_with_faces([(other, (60, 100))])).convert("L").save(folder / "gray.png")
    rgba = np.zeros((300, 360, 4), np.uint8)
    rgba[60:188, 100:228, :3], rgba[60:188, 100:228, 3] = other, 255
    Image.fromarray(rgba).save(folder / "alpha.png")
    # Stored sideways with EXIF orientation 6 (rotate 90 clockwise to view): dlib's
    # frontal detector finds the face only if the rotation is applied.
    upright = Image.fromarray(photo_with_faces([(other, (60, 100))]))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "exif.jpg", exif=exif, quality=95)
    (folder / "sub").mkdir()
    (folder / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_ages_a_folder_reports_skips_and_touches_nothing(workdir, photo_folder, tmp_path, capsys):
    before = _hash_tree(photo_folder)
    out = tmp_path / "out"
    assert age.main([str(photo_folder), f"--workdir={workdir}", f"--out={out}", "--paste-back"]) == 0
    assert _hash_tree(photo_folder) == before
    written = sorted(os.listdir(out))
    for stem in ("face", "two_faces", "gray", "alpha", "exif"):
        assert f"{stem}_grid.png" in written, stem
        for label in ("11-20", "51+"):
            assert f"{stem}_{label}.png" in written and f"{stem}_{label}_photo.png" in written
    assert not any(name.startswith(("no_face", "tiny", "corrupt")) for name in written)
    grid = np.asarray(Image.open(out / "face_grid.png"))
    assert grid.shape[1] >= 6 * 32  # input + 5 groups
    assert np.asarray(Image.open(out / "exif_11-20_photo.png")).shape == (300, 360, 3)  # upright
    report = capsys.readouterr().err
    assert "aged 5 face(s) from 5 of 8 photo(s)" in report
    assert "no_face.png: no face found" in report
    assert "tiny.png: face too small" in report
    assert "corrupt.jpg: truncated file" in report


def test_cli_all_faces_groups_and_output_folder_rules(workdir, photo_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    two = str(photo_folder / "two_faces.jpg")
    assert age.main([two, f"--workdir={workdir}", f"--out={out}", "--all-faces", "--groups", "0", "4"]) == 0
    assert sorted(os.listdir(out)) == sorted(f"two_faces_face{k}_{s}.png" for k in (1, 2)
                                             for s in ("grid", "11-20", "51+"))
    before = _hash_tree(out)
    assert age.main([two, f"--workdir={workdir}", f"--out={out}"]) == 2
    assert "nothing is overwritten" in capsys.readouterr().err and _hash_tree(out) == before
    assert age.main([str(photo_folder), f"--workdir={workdir}", f"--out={photo_folder / 'aged'}"]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aged").mkdir()
    # Each claim creates its folder at once: two runs started together never share one.
    assert age.claim_output_dir(None, [two]) == (str(tmp_path / "aged_1"), True)
    assert age.claim_output_dir(None, [two]) == (str(tmp_path / "aged_2"), True)
    assert age.main([str(photo_folder / "no_face.png"), f"--workdir={workdir}"]) == 1
    assert not (tmp_path / "aged_3").exists(), "a run that wrote nothing leaves no folder"
    assert "aged 0 face(s) from 0 of 1 photo(s): nothing written" in capsys.readouterr().err


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_cli_refuses_bad_requests_in_one_line_and_leaves_nothing(workdir, photo_folder, tmp_path, capsys):
    face = str(photo_folder / "face.png")
    out = tmp_path / "new_out"
    for argv, message in (
            ([str(tmp_path / "nope.jpg")], "error: input '" + str(tmp_path / "nope.jpg") + "' does not exist"),
            ([face, "--groups", "7"], "error: --groups: age groups must be a non-empty list in 0..4, got (7,)"),
            ([face, f"--checkpoint={photo_folder}"], "nor an exported generator"),
            ([face, f"--checkpoint={workdir}/checkpoints/99"], "does not exist"),
            ([face, f"--workdir={workdir}", "--step=99"], "choose a checkpoint with --workdir=WORKDIR --step=N"),
            ([face, f"--checkpoint={workdir}", "--step=3"], "error: --step needs --workdir")):
        assert age.main([*argv, f"--out={out}"] + ([] if "--workdir" in " ".join(argv) or "--checkpoint" in
                                                   " ".join(argv) else [f"--workdir={workdir}"])) == 2, argv
        assert message in _last_line(capsys), argv
        assert not out.exists(), argv
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"mine")
    assert age.main([face, f"--workdir={workdir}", f"--out={a_file / 'sub'}"]) == 2
    assert _last_line(capsys).startswith(f"error: cannot create the output folder {a_file / 'sub'}: Not a directory")
    assert a_file.read_bytes() == b"mine"
    for argv, message in ((["--groups", "1", "1"], "--groups asks twice for 1"),
                          (["--age", "37", "37.0000001"], "--age asks twice for 37y"),
                          (["--image-size", "0"], "--image-size must be at least 8"),
                          (["--min-face-size", "-5"], "--min-face-size must be at least 1"),
                          (["--progression", "--duration", "inf"], "finite number of seconds")):
        with pytest.raises(SystemExit):  # argparse's usage error, before any model is loaded
            age.main([face, f"--workdir={workdir}", f"--out={out}", *argv])
        assert message in _last_line(capsys), argv
        assert not out.exists(), argv


def test_cli_a_file_that_cannot_be_written_is_removed_and_stops_the_run(workdir, photo_folder, tmp_path,
                                                                        capsys, monkeypatch):
    import resource
    import signal

    path = tmp_path / "big.png"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # as a full disk: writes past 4 KB fail
    try:
        with pytest.raises(OSError, match="writing .*big.png failed: File too large; it was removed"):
            visualization.write_new_file(str(path), b"x" * 10_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert not path.exists()
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        visualization.write_new_file(str(path), b"theirs")
    assert path.read_bytes() == b"mine"

    def disk_full(path, data):
        raise OSError(f"writing {path} failed: No space left on device; it was removed")

    monkeypatch.setattr(visualization, "write_new_file", disk_full)
    out = tmp_path / "out"
    assert age.main([str(photo_folder), f"--workdir={workdir}", f"--out={out}"]) == 2
    assert _last_line(capsys).startswith(f"error: writing {out}/") and not out.exists()


def test_cli_reports_the_files_of_input_folders_it_leaves_out(workdir, photo_folder, tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "real").mkdir(parents=True)
    Image.open(photo_folder / "face.png").convert("RGB").save(folder / "real" / "phone.jfif", format="JPEG")
    (folder / "real" / "holiday.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "notes.txt").write_text("not an image")
    os.symlink(folder / "real", folder / "link")  # followed once; a link back to a parent is not a loop
    os.symlink(folder, folder / "real" / "up")
    photos, others = age.list_photos([str(folder)])
    assert photos == [str(folder / "link" / "holiday.heic"), str(folder / "link" / "phone.jfif")] or \
        photos == [str(folder / "real" / "holiday.heic"), str(folder / "real" / "phone.jfif")]
    assert others == [str(folder / "notes.txt")]
    assert age.main([str(folder), f"--workdir={workdir}", f"--out={tmp_path / 'out'}", "--groups", "0"]) == 0
    err = capsys.readouterr().err
    assert "aged 1 face(s) from 1 of 2 photo(s)" in err and "holiday.heic: not a recognised image format" in err
    assert "left out 1 file(s) in the input folders not named as images" in err and "notes.txt" in err


def test_synthetic_alignment_reproduces_the_dataset_layout():
    """A synthetic face pasted into a photo and aligned comes out where the renderer puts it."""
    settings = framing.synthetic_alignment(64)
    identities = synthetic.sample_identities(8, seed=3)
    template = inference.alignment.face_template(64, settings.padding, settings.vertical_shift)
    landmarks = synthetic.face_landmarks(identities, np.arange(8) % 5, size=64)
    assert np.abs(landmarks.mean(0) - template).max() < 1.0
    default = inference.alignment.face_template(64)
    assert np.abs(landmarks.mean(0) - default).max() > 3.0  # the CACD layout would not fit


def test_image_bytes_round_trip_exif_helper():
    """Guards the EXIF fixture: orientation 6 really needs a rotation to view upright."""
    image = Image.new("RGB", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert Image.open(io.BytesIO(buffer.getvalue())).getexif()[0x0112] == 6


def test_export_and_eval_say_in_one_line_what_is_not_a_generator(workdir, tmp_path, capsys):
    from ipcgan_jax import evaluation, export
    from tests.helpers import config_file

    pretrain = tmp_path / "age_classifier_run"
    pretrain.mkdir()
    (pretrain / "config.json").write_text('{"task": "age_classifier"}')
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = ((tmp_path / "missing", "does not exist"), (pretrain, "holds a 'age_classifier' run, not a GAN run"),
             (empty, "config.json not found"))
    for path, message in cases:
        with pytest.raises(inference.NotAGeneratorError, match=message):  # main.py prints it in one line
            evaluation.evaluate(config_file("eval"), str(path))
        assert export.main([f"--workdir={path}", f"--out={tmp_path / 'out'}"]) == 2
        with pytest.raises(inference.NotAGeneratorError) as loading:
            inference.load_generator(str(path))
        assert _last_line(capsys) == f"error: {loading.value}"  # no --step hint: no step would help
    assert not (tmp_path / "out").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "README.txt").write_text("mine")
    assert export.main([f"--workdir={workdir}", f"--out={taken}"]) == 2
    assert "exists and is not empty; refusing to overwrite it" in _last_line(capsys)
    assert os.listdir(taken) == ["README.txt"]
    with pytest.raises(SystemExit):
        export.main([f"--workdir={workdir}", f"--out={tmp_path / 'out'}", f"--results={tmp_path / 'nope.json'}"])
    assert "--results" in _last_line(capsys) and not (tmp_path / "out").exists()


def test_a_damaged_exported_generator_is_named_in_one_line(workdir, photo_folder, tmp_path, capsys):
    from ipcgan_jax import export

    broken_metadata, truncated = tmp_path / "broken_metadata", tmp_path / "truncated"
    listed_metadata, discriminator = tmp_path / "listed_metadata", tmp_path / "discriminator"
    for path in (broken_metadata, truncated, listed_metadata, discriminator):
        export.export_generator(workdir, str(path))
    (broken_metadata / checkpointing.METADATA_FILE).write_text('{"network": "gener')
    (listed_metadata / checkpointing.METADATA_FILE).write_text('[]')
    (discriminator / checkpointing.METADATA_FILE).write_text('{"network": "discriminator"}')
    broken_config = tmp_path / "broken_config"
    broken_config.mkdir()
    (broken_config / "config.json").write_text('{"task": "ga')
    data_files = [p for p in (truncated / checkpointing.VARIABLES_DIR).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    for data_file in data_files:
        os.truncate(data_file, data_file.stat().st_size // 2)
    face = str(photo_folder / "face.png")
    for path, message in ((broken_metadata, f"error: {broken_metadata / checkpointing.METADATA_FILE} is not valid JSON"),
                          (listed_metadata, f"error: {listed_metadata / checkpointing.METADATA_FILE} holds a list"),
                          (discriminator, f"error: {discriminator} is not an exported generator (needs a "
                                          "generator's params and batch_stats; metadata says network='discriminator')"),
                          (broken_config, f"error: {broken_config / 'config.json'} is not valid JSON"),
                          (truncated, f"error: the exported variables at {truncated} are unreadable: array data "
                                      "truncated")):
        assert age.main([face, f"--checkpoint={path}", f"--out={tmp_path / 'out'}"]) == 2
        assert _last_line(capsys).startswith(message)
        assert not (tmp_path / "out").exists()
