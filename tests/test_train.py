"""The GAN trainer end to end: outputs, resume equivalence, preemption, bad configs."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from ipcgan_jax import checkpointing, configlib, tasks
from ipcgan_jax.runlib import loop
from ipcgan_jax.runlib import workdir as workdir_lib
from tests.helpers import config_file, random_alexnet_params, tiny_gan_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def frozen_dir(tmp_path_factory):
    """Exported frozen networks (random weights) in the format the GAN reads."""
    config = tiny_gan_config()
    params = random_alexnet_params(config)
    root = tmp_path_factory.mktemp("frozen")
    trunk = {k: v for k, v in params.items() if not k.startswith("age_")}
    age = {k: v for k, v in params.items() if k.startswith("age_")}
    checkpointing.save_variables(str(root / "alexnet"), {"params": trunk}, {"kind": "test"})
    checkpointing.save_variables(str(root / "age"), {"params": age}, {"kind": "test"})
    return root


def make_config(frozen_dir, **overrides):
    config = tiny_gan_config()
    config.frozen.alexnet = str(frozen_dir / "alexnet")
    config.frozen.age_classifier = str(frozen_dir / "age")
    config.update_from_flattened_dict(overrides)
    return config


def assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(frozen_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "straight"
    state = tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    return workdir, state


def test_run_writes_checkpoints_logs_and_samples(uninterrupted):
    workdir, state = uninterrupted
    assert int(state.step) == 4
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    logged = [l for l in lines if "train/d_loss" in l]
    assert [l["step"] for l in logged] == [1, 2, 3, 4]
    for key in ("train/g_adversarial_loss", "train/g_feature_loss_weighted", "train/g_age_loss",
                "train/d_score_real_true", "train/g_grad_norm", "train/images_per_s"):
        assert key in logged[-1]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    assert sorted(os.listdir(workdir / "samples")) == ["step_0000000.png", "step_0000002.png", "step_0000004.png"]
    from PIL import Image
    sheet = np.asarray(Image.open(workdir / "samples" / "step_0000004.png"))
    # 3 sample faces x (input + 5 age groups) tiles of 32 px.
    assert sheet.shape[1] >= 6 * 32 and sheet.shape[0] >= 3 * 32


def test_resumed_run_ends_where_an_uninterrupted_one_does(frozen_dir, uninterrupted, tmp_path):
    _, straight = uninterrupted
    workdir = str(tmp_path / "resumed")
    first = tasks.train_and_evaluate(make_config(frozen_dir, num_steps=2), workdir)
    assert int(first.step) == 2
    resumed = tasks.train_and_evaluate(make_config(frozen_dir), workdir)
    assert_same_state(resumed, straight)
    events = [json.loads(l).get("event") for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert events.count("resumed") == 1


def test_resume_ignores_a_save_killed_midway(frozen_dir, uninterrupted, tmp_path):
    _, straight = uninterrupted
    # A run that saved step 2 and was killed while saving step 3: the uninterrupted run's
    # checkpoint 2 (the same trajectory), and what an asynchronous save killed mid-flight
    # leaves behind: its temporary folder (named as this Orbax names them), with only some
    # of the files.
    workdir = tmp_path / "killed"
    shutil.copytree(uninterrupted[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "4")
    complete, partial = workdir / "checkpoints" / "2", workdir / "checkpoints" / "3.orbax-checkpoint-tmp"
    shutil.copytree(complete, partial)
    for sub in sorted(partial.rglob("*"))[::2]:
        if sub.is_file():
            sub.unlink()
    files = lambda root: {p.relative_to(root) for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(partial) < files(complete), "the save of step 3 must be unfinished"
    assert checkpointing.restore_state_tree(str(workdir / "checkpoints"))[2] == 2, "step 3 must not count"
    resumed = tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    events = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"event"' in l]
    assert [e["step"] for e in events if e["event"] == "resumed"] == [2]
    assert not partial.exists(), "the unfinished save is cleaned up"
    assert_same_state(resumed, straight)


def test_sigkill_then_rerun_matches_uninterrupted(frozen_dir, uninterrupted, tmp_path):
    """A real kill at an arbitrary moment (steps checkpoint asynchronously every step)."""
    _, straight = uninterrupted
    workdir = tmp_path / "sigkill"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        import tests.conftest
        from tests.test_train import make_config
        from ipcgan_jax import tasks
        import pathlib
        config = make_config(pathlib.Path({str(frozen_dir)!r}))
        config.checkpoint.every = 1
        tasks.train_and_evaluate(config, {str(workdir)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    checkpoints = workdir / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]
    assert done and max(done) < 4, f"the kill must land mid-run, after a checkpoint (found {done})"
    config = make_config(frozen_dir)
    config.checkpoint.every = 1
    resumed = tasks.train_and_evaluate(config, str(workdir))
    assert_same_state(resumed, straight)


def test_numpy_backend_trains_without_tensorflow_to_the_same_state(frozen_dir, uninterrupted, tmp_path):
    """A host without TensorFlow trains with data.backend='numpy' (nothing of the trainer,
    its writers or its data imports TensorFlow), to the parameters tf.data's batches give."""
    _, straight = uninterrupted
    workdir, state_file = tmp_path / "numpy_backend", tmp_path / "state.npz"
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        sys.modules["tensorflow_datasets"] = None
        sys.path.insert(0, {ROOT!r})
        import pathlib
        import numpy as np
        import tests.conftest
        from tests.multiprocess_worker import flatten_state
        from tests.test_train import make_config
        from ipcgan_jax import tasks
        config = make_config(pathlib.Path({str(frozen_dir)!r}), **{{"data.backend": "numpy"}})
        state = tasks.train_and_evaluate(config, {str(workdir)!r})
        np.savez({str(state_file)!r}, **flatten_state(state))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    from tests.multiprocess_worker import flatten_state
    expected = flatten_state(straight)
    with np.load(state_file) as got:
        assert sorted(got.files) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))


def test_sigterm_saves_and_exits(frozen_dir, tmp_path, monkeypatch):
    """(Ctrl-C's first SIGINT sets the same request: test_ctrl_c_asks_to_save_then_stops_at_once.)"""
    signum = signal.SIGTERM
    workdir = tmp_path / "preempted"
    config = make_config(frozen_dir, num_steps=40)
    config.checkpoint.every = 1000
    real_step = {}

    original = loop.StopRequest.any_process

    def preempt_at_step_3(self):
        real_step["calls"] = real_step.get("calls", 0) + 1
        if real_step["calls"] == 3:
            os.kill(os.getpid(), signum)
        return original(self)

    monkeypatch.setattr(loop.StopRequest, "any_process", preempt_at_step_3)
    state = tasks.train_and_evaluate(config, str(workdir))
    assert int(state.step) == 3
    assert os.listdir(workdir / "checkpoints") == ["3"]
    events = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"event"' in l]
    assert [(e["event"], e.get("reason")) for e in events if e["event"] == "stopped"] == [
        ("stopped", signal.Signals(signum).name)]


def test_ctrl_c_asks_to_save_then_stops_at_once():
    stop = loop.StopRequest()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        # The first sets the request SIGTERM sets (the loop saves at its next log or
        # checkpoint step and stops: test_sigterm_saves_and_exits), naming Ctrl-C's signal.
        assert stop.requested and stop.reason == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.parametrize("override, message", [
    ({"loss.gan_wieght": 1.0}, "unknown config key 'loss.gan_wieght' (did you mean 'loss.gan_weight'?)"),
    ({"batch_sise": 4}, "unknown config key 'batch_sise'"),
    ({"loss.feature_layer": "conv9"}, "'loss.feature_layer'"),
    ({"optimizer.b1": 1.5}, "'optimizer.b1'"),
    ({"data.image_size": 30}, "'data.image_size'"),
    ({"data.source_groups": (7,)}, "'data.source_groups'"),
    ({"compute_dtype": "float16"}, "'compute_dtype'"),
    ({"generator_ema_decay": 1.0}, "'generator_ema_decay'"),
])
def test_bad_config_fails_at_start_naming_the_key(frozen_dir, tmp_path, override, message):
    config = make_config(frozen_dir)
    with config.unlocked():
        for key, value in override.items():
            parent = config
            *path, last = key.split(".")
            for p in path:
                parent = parent[p]
            parent[last] = value
    with pytest.raises(configlib.ConfigError) as err:
        tasks.train_and_evaluate(config, str(tmp_path / "bad"))
    assert message in str(err.value)
    assert not (tmp_path / "bad").exists(), "nothing may be written for a rejected config"


def test_missing_frozen_network_says_which_command_makes_it(frozen_dir, tmp_path):
    config = make_config(frozen_dir)
    config.frozen.age_classifier = str(tmp_path / "nowhere")
    with pytest.raises(checkpointing.CheckpointError) as err:
        tasks.train_and_evaluate(config, str(tmp_path / "w"))
    assert "frozen.age_classifier" in str(err.value)
    assert "configs/age_classifier.py" in str(err.value)


def test_workdir_of_another_tool_or_config_is_refused(frozen_dir, tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "notes.txt").write_text("mine")
    with pytest.raises(configlib.ConfigError, match="not written by ipcgan_jax"):
        tasks.train_and_evaluate(make_config(frozen_dir), str(foreign))
    assert (foreign / "checkpoints" / "notes.txt").read_text() == "mine"


def test_resume_with_a_changed_config_is_refused(frozen_dir, uninterrupted):
    workdir, _ = uninterrupted
    with pytest.raises(configlib.ConfigError, match="loss.age_weight"):
        tasks.train_and_evaluate(make_config(frozen_dir, **{"loss.age_weight": 1.0}), str(workdir))


def test_a_start_that_saved_nothing_does_not_lock_the_workdir_to_its_config(frozen_dir, tmp_path):
    """A first start that stopped before any checkpoint (here: a frozen network not found)
    recorded its config; a corrected command with another config still runs there, until
    the workdir holds a checkpoint."""
    workdir = tmp_path / "w"
    for seed in (7, 8):  # the second start, with another config, passes the workdir's check
        failed = make_config(frozen_dir, seed=seed)
        failed.frozen.alexnet = str(tmp_path / "nowhere")
        with pytest.raises(checkpointing.CheckpointError, match="frozen.alexnet"):
            tasks.train_and_evaluate(failed, str(workdir))
        assert json.loads((workdir / workdir_lib.CONFIG_FILE).read_text())["seed"] == seed
    (workdir / "checkpoints" / "2").mkdir(parents=True)  # once a run has saved, its config binds
    with pytest.raises(configlib.ConfigError, match="holds a run with a different config .*seed"):
        tasks.train_and_evaluate(make_config(frozen_dir, seed=7), str(workdir))


def test_a_changed_key_binds_only_where_something_was_trained(tmp_path, caplog):
    """In a demo-style workdir whose identity trunk saved a checkpoint but whose GAN did
    not: the GAN's settings may change, the trunk's may not."""
    workdir = str(tmp_path / "w")
    workdir_lib.prepare_workdir(config_file("g75_conv5", "quick"), workdir)
    (tmp_path / "w" / "alexnet_identity" / "checkpoints" / "3").mkdir(parents=True)
    gan_changed = config_file("g75_conv5", "quick")
    gan_changed.seed += 1
    with caplog.at_level("WARNING"):
        workdir_lib.prepare_workdir(gan_changed, workdir)
    assert "changed keys: seed), but nothing was trained under it" in caplog.text
    trunk_changed = config_file("g75_conv5", "quick")
    trunk_changed.pretrain.alexnet_identity.seed += 1
    with pytest.raises(configlib.ConfigError, match=r"changed keys: pretrain\.alexnet_identity\.seed\)"):
        workdir_lib.prepare_workdir(trunk_changed, workdir)


def test_a_foreign_workdir_is_refused_before_nested_runs_write_into_it(tmp_path):
    """Another task's run (with a checkpoint) and a user's export/ folder are refused at
    the start, in one line naming them, before the pretrain runs or any training."""
    other_task = tmp_path / "evaluator_run"
    (other_task / "checkpoints" / "5").mkdir(parents=True)
    (other_task / workdir_lib.CONFIG_FILE).write_text(json.dumps({"task": "age_evaluator"}))
    before = tree_bytes(other_task)
    with pytest.raises(configlib.ConfigError, match=f"{other_task} holds a 'age_evaluator' run"):
        tasks.train_and_evaluate(config_file("g75_conv5", "quick"), str(other_task))
    assert sorted(os.listdir(other_task)) == ["checkpoints", workdir_lib.CONFIG_FILE]  # no nested run began
    assert tree_bytes(other_task) == before

    users_export = tmp_path / "classifier_run"
    (users_export / "export").mkdir(parents=True)
    (users_export / "export" / "mine.txt").write_text("mine")
    with pytest.raises(configlib.ConfigError, match="export exists and was not written by a 'age_evaluator' run"):
        tasks.train_and_evaluate(config_file("age_evaluator", "quick"), str(users_export))
    assert not (users_export / "checkpoints").exists() and (users_export / "export" / "mine.txt").read_text() == "mine"


def test_nested_runs_on_other_data_than_the_gan_are_named(tmp_path, monkeypatch, caplog):
    """--config.data.name changes the GAN's data alone: the frozen networks of a demo-style
    config keep training on theirs, and the run says so."""
    config = config_file("g75_conv5", "quick")
    config.data.name = "image_folder"
    monkeypatch.setattr(tasks, "has_export", lambda workdir: True)  # the nested runs are done
    monkeypatch.setattr(tasks.train, "train_gan", lambda config, workdir, devices: "trained")
    with caplog.at_level("WARNING"):
        assert tasks.train_and_evaluate(config, str(tmp_path / "w")) == "trained"
    assert "pretrain.alexnet_identity trains on data 'synthetic', the GAN on 'image_folder'" in caplog.text


def test_unusable_workdirs_are_named_in_one_line(frozen_dir, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    with pytest.raises(configlib.ConfigError, match=f"--workdir {a_file} cannot be used: File exists"):
        tasks.train_and_evaluate(make_config(frozen_dir), str(a_file))
    assert a_file.read_text() == "mine"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / workdir_lib.CONFIG_FILE).write_text('{"task": "ga')
    with pytest.raises(configlib.ConfigError, match=f"{damaged / workdir_lib.CONFIG_FILE} is not valid JSON"):
        tasks.train_and_evaluate(make_config(frozen_dir), str(damaged))
    (damaged / workdir_lib.CONFIG_FILE).write_text('["gan"]')
    with pytest.raises(configlib.ConfigError, match=f"{damaged / workdir_lib.CONFIG_FILE} holds a list"):
        tasks.train_and_evaluate(make_config(frozen_dir), str(damaged))


def test_sample_sheets_never_replace_a_file_they_did_not_write(tmp_path):
    from ipcgan_jax import visualization

    sheet = np.full((4, 6, 3), 90, np.uint8)
    path = tmp_path / "step_0000000.png"
    path.write_bytes(b"the user's")
    assert visualization.save_png_beside(str(path), sheet) == str(tmp_path / "step_0000000_2.png")
    assert path.read_bytes() == b"the user's"
    # The same sheet again (a resumed run) is not written twice.
    assert visualization.save_png_beside(str(path), sheet) == str(tmp_path / "step_0000000_2.png")
    assert sorted(os.listdir(tmp_path)) == ["step_0000000.png", "step_0000000_2.png"]
    from PIL import Image
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "step_0000000_2.png")), sheet)


def test_sigterm_during_a_pretrain_run_stops_the_whole_run(tmp_path, monkeypatch):
    config = config_file("g75_conv5", "quick")
    calls = {"n": 0}
    original = loop.StopRequest.any_process

    def preempt_at_step_3(self):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(loop.StopRequest, "any_process", preempt_at_step_3)
    workdir = tmp_path / "run"
    tasks.train_and_evaluate(config, str(workdir))
    # Neither the later networks nor the GAN ran (the GAN's config is recorded at the start).
    assert sorted(os.listdir(workdir)) == ["alexnet_identity", workdir_lib.CONFIG_FILE]
    assert os.listdir(workdir / "alexnet_identity" / "checkpoints") == ["3"]
    assert not workdir_lib.has_export(str(workdir / "alexnet_identity"))


# ----------------------------------------------------------------------------- reliability
# Each fault is made for real on a copy of the module's uninterrupted run (checkpoints 2, 4).

def copy_of_run(uninterrupted, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(uninterrupted[0], workdir)
    return workdir


def truncate_arrays(step_dir):
    """What a failing disk or an interrupted copy leaves: the array data files cut in half."""
    data_files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    for path in data_files:
        os.truncate(path, path.stat().st_size // 2)


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rewrite_checkpoint(workdir, step, fields):
    """Replaces checkpoint `step` of the run in `workdir` by the GAN state `fields` (a dict
    of GanState's fields, as Orbax stores a dataclass), keeping its run bookkeeping."""
    checkpoints = str(workdir / "checkpoints")
    _, run_info, _ = checkpointing.restore_state_tree(checkpoints, step)
    shutil.rmtree(os.path.join(checkpoints, str(step)))
    writer = checkpointing.TrainCheckpointer(checkpoints, keep_last=4, keep_every=0)
    writer.save(step, fields, run_info)
    writer.close()


def state_fields(state, leave_out=()):
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)
            if field.name not in leave_out}


def test_run_saved_before_the_weight_average_existed_resumes_on_its_trajectory(frozen_dir, uninterrupted,
                                                                              tmp_path):
    """A faithful run written before GanState had g_ema_params (its checkpoint lacks the
    field, its config.json lacks generator_ema_decay) resumes and ends where an
    uninterrupted run does."""
    _, straight = uninterrupted
    workdir = copy_of_run(uninterrupted, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "4")
    reader = checkpointing.TrainCheckpointer(str(workdir / "checkpoints"), keep_last=4, keep_every=0)
    at_step_2, _ = reader.restore(2, straight)  # the final state's layout, shapes and shardings
    reader.close()
    rewrite_checkpoint(workdir, 2, state_fields(at_step_2, leave_out=("g_ema_params",)))
    config_path = workdir / workdir_lib.CONFIG_FILE
    recorded = json.loads(config_path.read_text())
    del recorded["generator_ema_decay"]
    config_path.write_text(json.dumps(recorded))
    saved = checkpointing.restore_state_tree(str(workdir / "checkpoints"), 2)[0]
    assert "g_ema_params" not in saved and "g_params" in saved, "must be the old layout"

    resumed = tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    assert resumed.g_ema_params is None
    assert_same_state(resumed, straight)
    events = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"event"' in l]
    assert [e["step"] for e in events if e["event"] == "resumed"] == [2]


def test_checkpoint_of_another_state_layout_is_refused_naming_the_field(frozen_dir, uninterrupted, tmp_path):
    """A checkpoint whose state differs from what the run builds otherwise than by a field
    added later (here: it holds a weight average the faithful run does not keep) stops the
    run with a CheckpointError naming the field; the checkpoint is neither moved nor changed."""
    _, straight = uninterrupted
    workdir = copy_of_run(uninterrupted, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "4")
    fields = state_fields(straight)
    fields["g_ema_params"] = straight.g_params
    rewrite_checkpoint(workdir, 2, fields)
    before = tree_bytes(workdir / "checkpoints")
    with pytest.raises(checkpointing.CheckpointError, match="checkpoint 2 .*g_ema_params"):
        tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    assert tree_bytes(workdir / "checkpoints") == before
    assert not (workdir / "checkpoints_quarantine").exists()


def test_unreadable_newest_checkpoint_is_moved_aside_and_training_resumes(frozen_dir, uninterrupted, tmp_path,
                                                                        caplog):
    _, straight = uninterrupted
    workdir = copy_of_run(uninterrupted, tmp_path)
    truncate_arrays(workdir / "checkpoints" / "4")
    damaged = tree_bytes(workdir / "checkpoints" / "4")
    with caplog.at_level("WARNING"):
        resumed = tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    # Retrained from checkpoint 2 to the same parameters; the damaged one kept, byte for byte.
    assert_same_state(resumed, straight)
    assert os.listdir(workdir / "checkpoints_quarantine") == ["4-truncated"]
    assert tree_bytes(workdir / "checkpoints_quarantine" / "4-truncated") == damaged
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    # Only the trainer's own report: asyncio may also log the failed reads' unretrieved
    # futures, whose messages name this test's tmp path ("...unreadable...").
    warnings = [m for m in (r.getMessage() for r in caplog.records) if m.startswith("checkpoint ") and "unreadable" in m]
    assert len(warnings) == 1 and "checkpoint 4 is unreadable (array data truncated" in warnings[0]
    assert "resuming from checkpoint 2" in warnings[0]
    events = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"event"' in l]
    assert [(e["event"], e["step"]) for e in events[-2:]] == [("checkpoint_unreadable", 4), ("resumed", 2)]


def test_no_readable_checkpoint_stops_naming_each_and_moves_nothing(frozen_dir, uninterrupted, tmp_path):
    workdir = copy_of_run(uninterrupted, tmp_path)
    (workdir / "checkpoints" / "4" / "state" / "manifest.ocdbt").write_bytes(b"\0garbage")
    (workdir / "checkpoints" / "2" / "state" / "_METADATA").write_text('{"tree_metadata": {')
    before = tree_bytes(workdir / "checkpoints")
    with pytest.raises(checkpointing.CheckpointError) as err:
        tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
    message = str(err.value)
    assert message.startswith(f"no readable checkpoint in {workdir / 'checkpoints'}")
    assert "4: corrupt manifest or array data" in message
    assert "2: corrupt metadata: state/_METADATA is not valid JSON" in message
    assert len(message) < 600 and "\n" not in message
    assert tree_bytes(workdir / "checkpoints") == before and not (workdir / "checkpoints_quarantine").exists()


def test_readers_name_the_unreadable_step_and_how_to_choose_another(uninterrupted, tmp_path, capfd):
    from ipcgan_jax import age, evaluation, export, inference
    workdir = copy_of_run(uninterrupted, tmp_path)
    truncate_arrays(workdir / "checkpoints" / "4")
    with pytest.raises(checkpointing.UnreadableCheckpointError) as err:
        inference.load_generator(str(workdir))
    assert err.value.step == 4 and "other steps there: 2" in str(err.value)
    capfd.readouterr()

    out = tmp_path / "exported"
    assert export.main(["--workdir", str(workdir), "--out", str(out)]) == 2
    printed = capfd.readouterr().err.strip()
    assert printed.startswith(f"error: checkpoint 4 in {workdir / 'checkpoints'} is unreadable: array data truncated")
    assert printed.endswith("choose a checkpoint with --step=N") and "\n" not in printed
    assert not out.exists()
    assert export.main(["--workdir", str(workdir), "--out", str(out), "--step", "2"]) == 0

    photo = tmp_path / "photo.png"
    photo.write_bytes((workdir / "samples" / "step_0000002.png").read_bytes())
    assert age.main([str(photo), "--workdir", str(workdir), "--out", str(tmp_path / "aged")]) == 2
    printed = capfd.readouterr().err.strip()
    assert printed.startswith("error: checkpoint 4") and printed.endswith("--workdir=WORKDIR --step=N")
    assert "\n" not in printed and not (tmp_path / "aged").exists()

    with pytest.raises(checkpointing.CheckpointError, match=r"checkpoint 4 .* --config\.step=N"):
        evaluation.evaluate(config_file("eval"), str(workdir))


def test_failed_save_stops_the_run_and_keeps_the_last_complete_checkpoint(frozen_dir, uninterrupted, tmp_path):
    """A save the file system refuses (here: no file may grow past 32 KB, as on a full
    disk; the checkpoints' array files are larger) stops the run with one line; checkpoint
    4 stays as it was and the next run resumes from it."""
    import resource
    workdir = copy_of_run(uninterrupted, tmp_path)
    kept = tree_bytes(workdir / "checkpoints" / "4")
    config = make_config(frozen_dir, num_steps=6, sample_every=100)  # the save of step 6 fails
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        with pytest.raises(checkpointing.CheckpointSaveError) as err:
            tasks.train_and_evaluate(config, str(workdir))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert str(err.value).startswith(f"saving checkpoint 6 in {workdir / 'checkpoints'} failed: File too large")
    assert str(err.value).endswith("checkpoint 4 is the last complete one and the next run resumes from it")
    assert tree_bytes(workdir / "checkpoints" / "4") == kept
    assert sorted(p for p in os.listdir(workdir / "checkpoints") if p.isdigit()) == ["2", "4"]
    assert not (workdir / "run.lock").exists()
    # Orbax's writers of the failed save's other arrays finish in the background (a new
    # process, as the next run usually is, would not meet them): let them end first.
    listing, deadline = None, time.time() + 60
    while time.time() < deadline and listing != (listing := sorted(str(p) for p in workdir.rglob("*"))):
        time.sleep(0.5)

    state = tasks.train_and_evaluate(config, str(workdir))
    assert int(state.step) == 6
    events = [json.loads(l) for l in open(workdir / "metrics.jsonl") if '"event"' in l]
    assert [e["step"] for e in events if e["event"] == "resumed"][-2:] == [4, 4]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]


def test_second_run_is_refused_while_the_first_holds_the_workdir(frozen_dir, uninterrupted, tmp_path, caplog):
    from ipcgan_jax import inference
    from ipcgan_jax.runlib import lock
    workdir = copy_of_run(uninterrupted, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ipcgan_jax.runlib import lock; "
         f"lock.acquire({str(workdir)!r}); print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree_bytes(workdir)
        with pytest.raises(lock.WorkdirLockedError) as err:
            tasks.train_and_evaluate(make_config(frozen_dir, num_steps=6), str(workdir))
        assert f"{workdir} is in use by pid {holder.pid} on host" in str(err.value)
        assert tree_bytes(workdir) == before
        inference.load_generator(str(workdir))  # readers need no lock
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind
        holder.wait()
    assert json.loads((workdir / "run.lock").read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING"):
        fd = lock.acquire(str(workdir))  # the next run's
    assert any(f"from pid {holder.pid}" in r.getMessage() and "no longer running" in r.getMessage()
               for r in caplog.records)
    assert json.loads((workdir / "run.lock").read_text())["pid"] == os.getpid()
    lock.release(str(workdir), fd)
    assert not (workdir / "run.lock").exists()


def test_lock_of_another_host_is_taken_over_only_when_asked(tmp_path):
    from ipcgan_jax.runlib import lock
    workdir = tmp_path / "w"
    workdir.mkdir()
    record = {"host": "node-that-crashed", "pid": os.getpid(), "started": "2026-01-01T00:00:00+00:00"}
    (workdir / "run.lock").write_text(json.dumps(record))
    with pytest.raises(lock.WorkdirLockedError, match="node-that-crashed.*rerun with --take_over_lock"):
        lock.acquire(str(workdir))
    fd = lock.acquire(str(workdir), take_over=True)
    assert json.loads((workdir / "run.lock").read_text())["pid"] == os.getpid()
    lock.release(str(workdir), fd)
    assert os.listdir(workdir) == []
    (workdir / "run.lock").write_text("my notes")  # a file of the user's, not a lock: never overwritten
    with pytest.raises(lock.WorkdirLockedError, match="not a lock file of this project"):
        lock.acquire(str(workdir))
    assert (workdir / "run.lock").read_text() == "my notes"


# ----------------------------------------------------------------------------- G's weight average
EMA_DECAY = 0.75


@pytest.fixture(scope="module")
def averaged(frozen_dir, tmp_path_factory):
    """The tiny run with the variant generator_ema_decay, a checkpoint after every step,
    stopped after step 2 and resumed to step 4."""
    workdir = tmp_path_factory.mktemp("run") / "averaged"
    config = make_config(frozen_dir, generator_ema_decay=EMA_DECAY, **{"checkpoint.every": 1,
                                                                       "checkpoint.keep_last": 4})
    first = config.copy_and_resolve_references()
    first.num_steps = 2
    tasks.train_and_evaluate(first, str(workdir))
    return config, workdir, tasks.train_and_evaluate(config, str(workdir))


def test_faithful_run_keeps_no_weight_average(uninterrupted):
    _, state = uninterrupted
    assert state.g_ema_params is None


def test_weight_average_follows_its_recurrence_across_a_resume(averaged):
    """ema_k = d * ema_(k-1) + (1 - d) * g_k from ema_0 = G's initial weights, checked in
    numpy against the live weights checkpointed at every step: steps 3 and 4 ran after the
    resume, from the restored average. (The live weights of a resumed run are those of an
    uninterrupted one: test_resumed_run_ends_where_an_uninterrupted_one_does.)"""
    from ipcgan_jax import gan

    config, workdir, final = averaged
    expected = jax.tree.map(np.asarray, gan.init_state(config, jax.random.key(config.seed)).g_params)
    for step in range(1, 5):
        state, _, _ = checkpointing.restore_state_tree(str(workdir / "checkpoints"), step)
        expected = jax.tree.map(lambda e, g: EMA_DECAY * e + (1 - EMA_DECAY) * g, expected, state["g_params"])
        for got, want in zip(jax.tree.leaves(state["g_ema_params"]), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        # ... and is not simply the live weights.
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state["g_ema_params"]),
                                                             jax.tree.leaves(state["g_params"])))
    assert_same_state(final.g_ema_params, state["g_ema_params"])


def test_readers_take_the_average_unless_asked_for_the_live_weights(averaged, tmp_path):
    from ipcgan_jax import export, gan, inference

    _, workdir, state = averaged
    average = inference.load_generator(str(workdir))
    assert average.weights == "average"
    assert_same_state(average.variables, gan.sampling_variables(state))
    assert_same_state(average.variables["params"], state.g_ema_params)
    live = inference.load_generator(str(workdir), weights="live")
    assert live.weights == "live"
    assert_same_state(live.variables["params"], state.g_params)
    with pytest.raises(ValueError, match="weights must be one of"):
        inference.load_generator(str(workdir), weights="ema")
    metadata = export.export_generator(str(workdir), str(tmp_path / "export"), weights="live")
    assert metadata["generator_weights"] == "live"
    exported = inference.load_generator(str(tmp_path / "export"))
    assert exported.weights == "live"
    assert_same_state(exported.variables["params"], state.g_params)
