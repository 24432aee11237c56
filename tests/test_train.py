"""The GAN trainer end to end: outputs, resume equivalence, preemption, bad configs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

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
    workdir = tmp_path / "killed"
    tasks.train_and_evaluate(make_config(frozen_dir, num_steps=2), str(workdir))
    # What an asynchronous save killed mid-flight leaves behind: a temporary folder.
    partial = workdir / "checkpoints" / "3.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(workdir / "checkpoints" / "2", partial)
    for sub in sorted(partial.rglob("*"))[::2]:
        if sub.is_file():
            sub.unlink()
    resumed = tasks.train_and_evaluate(make_config(frozen_dir), str(workdir))
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
    import time
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
    workdir = tmp_path / "preempted"
    config = make_config(frozen_dir, num_steps=40)
    config.checkpoint.every = 1000
    real_step = {}

    original = loop.StopRequest.any_process

    def preempt_at_step_3(self):
        real_step["calls"] = real_step.get("calls", 0) + 1
        if real_step["calls"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(loop.StopRequest, "any_process", preempt_at_step_3)
    state = tasks.train_and_evaluate(config, str(workdir))
    assert int(state.step) == 3
    assert os.listdir(workdir / "checkpoints") == ["3"]
    events = [json.loads(l).get("event") for l in open(workdir / "metrics.jsonl")]
    assert "stopped" in events


@pytest.mark.parametrize("override, message", [
    ({"loss.gan_wieght": 1.0}, "unknown config key 'loss.gan_wieght' (did you mean 'loss.gan_weight'?)"),
    ({"batch_sise": 4}, "unknown config key 'batch_sise'"),
    ({"loss.feature_layer": "conv9"}, "'loss.feature_layer'"),
    ({"optimizer.b1": 1.5}, "'optimizer.b1'"),
    ({"data.image_size": 30}, "'data.image_size'"),
    ({"data.source_groups": (7,)}, "'data.source_groups'"),
    ({"compute_dtype": "float16"}, "'compute_dtype'"),
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
    assert sorted(os.listdir(workdir)) == ["alexnet_identity"]  # neither the later networks nor the GAN ran
    assert os.listdir(workdir / "alexnet_identity" / "checkpoints") == ["3"]
    assert not workdir_lib.has_export(str(workdir / "alexnet_identity"))
