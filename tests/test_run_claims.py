"""What the README claims of a run, each held by a test: a non-finite loss stops the run
naming the step and the term and keeps the last good checkpoint; checkpoint retention
(`keep_last`, `keep_every`); `compute_dtype=bfloat16` trains; and `main.py` itself, end
to end on `:quick`, and refusing a missing flag, a bad config path and bad overrides.

The `main.py` commands run as subprocesses started together (one CPU device each, the
tests' compilation cache), so the refusals cost no wall time beyond the end-to-end run.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ipcgan_jax import checkpointing, gan, parallel, tasks
from ipcgan_jax.data import batches as data_batches
from ipcgan_jax.runlib import loop
from tests.helpers import benchmark_module, config_file, random_alexnet_params, random_batch, tiny_gan_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN_STEP = 3


def write_frozen(config, directory) -> tuple[str, str]:
    """Exported frozen networks (random weights) in the format the GAN reads: (trunk, age head)."""
    params = random_alexnet_params(config)
    trunk = {k: v for k, v in params.items() if not k.startswith("age_")}
    age = {k: v for k, v in params.items() if k.startswith("age_")}
    checkpointing.save_variables(str(directory / "alexnet"), {"params": trunk}, {"task": "alexnet_identity"})
    checkpointing.save_variables(str(directory / "age"), {"params": age}, {"task": "age_classifier"})
    return str(directory / "alexnet"), str(directory / "age")


# ----------------------------------------------------------------------------- main.py
MAIN_ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": os.environ.get("IPCGAN_TEST_JAX_CACHE", "/tmp/ipcgan_jax_test_jax_cache")}
# name -> (arguments after main.py, with {w} for the workdir; what stderr must say)
REFUSALS = {
    "missing_workdir": (["--config=configs/g75_conv5.py:quick"], "Flag --workdir must have a value other than None"),
    "bad_config_path": (["--config=configs/no_such_config.py", "--workdir={w}"],
                        "no config file at configs/no_such_config.py"),
    "override_bad_value": (["--config=configs/g75_conv5.py:quick", "--workdir={w}", "--config.num_steps=ten"],
                           "flag --config.num_steps=ten: invalid literal for int()"),
    "override_unknown_key": (["--config=configs/g75_conv5.py:quick", "--workdir={w}", "--config.loss.typo=1"],
                             "unknown config key 'loss.typo' in --config.loss.typo=1"),
}


@pytest.fixture(scope="module")
def main_runs(tmp_path_factory):
    """Every main.py command of this file, started together: name -> (workdir, result)."""
    root = tmp_path_factory.mktemp("main")
    # :quick trains its frozen networks first unless their exports are in the workdir:
    # those runs are tests/test_notebook.py's; here the GAN of :quick runs from main.py.
    quick = root / "quick"
    quick.mkdir()
    trunk, age = write_frozen(config_file("g75_conv5", "quick"), root)
    os.makedirs(quick / "alexnet_identity")
    os.makedirs(quick / "age_classifier")
    os.replace(trunk, quick / "alexnet_identity" / "export")
    os.replace(age, quick / "age_classifier" / "export")
    # the evaluator's export is only looked for (the GAN run does not read it)
    checkpointing.save_variables(str(quick / "age_evaluator" / "export"), {"params": {"unused": np.zeros(1)}},
                                 {"task": "age_evaluator"})
    # the numpy input pipeline (the same batches as tf.data's) spares the run TensorFlow's start
    commands = {"quick": (quick, ["--config=configs/g75_conv5.py:quick", f"--workdir={quick}",
                                  "--config.data.backend=numpy"])}
    for name, (args, _) in REFUSALS.items():
        workdir = root / name
        commands[name] = (workdir, [a.format(w=workdir) for a in args])
    env = {**os.environ, **MAIN_ENV}
    procs = {name: (workdir, subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env, text=True,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE))
             for name, (workdir, args) in commands.items()}
    results = {}
    for name, (workdir, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[name] = (workdir, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def test_main_runs_quick_end_to_end(main_runs):
    workdir, result = main_runs["quick"]
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    assert sorted(os.listdir(workdir / "samples")) == ["step_0000000.png", "step_0000003.png", "step_0000006.png"]
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [line["step"] for line in lines if "train/d_loss" in line] == [1, 2, 3, 4, 5, 6]
    assert json.load(open(workdir / "config.json"))["task"] == "gan"
    state, _, step = checkpointing.restore_state_tree(str(workdir / "checkpoints"))
    assert step == 6 and int(state["step"]) == 6
    assert sorted(os.listdir(workdir / "alexnet_identity")) == ["export"]  # not retrained


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_main_refuses_bad_command_lines_before_any_work(main_runs, name):
    workdir, result = main_runs[name]
    assert result.returncode != 0
    assert REFUSALS[name][1] in result.stderr, result.stderr[-4000:]
    assert not workdir.exists(), "nothing may be written for a refused command line"


# ----------------------------------------------------------------------------- a run
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run checkpointing and logging every 2 steps whose inputs turn NaN at step
    NAN_STEP: the loss is fetched at step NAN_STEP + 1, a checkpoint step, whose state
    must not be saved. One device and the numpy input pipeline (the same batches as
    tf.data's) keep it cheap. Returns (workdir, the error)."""
    root = tmp_path_factory.mktemp("nan")
    config = tiny_gan_config()
    config.frozen.alexnet, config.frozen.age_classifier = write_frozen(config, root)
    config.update_from_flattened_dict({"num_steps": 6, "log_every": 2, "sample_every": 100,
                                       "checkpoint.every": 2, "data.backend": "numpy"})
    original = data_batches.gan_batches

    def poisoned(*args, start_step, **kwargs):
        # the identity features of the sources: only the G update's feature loss sees them
        for step, batch in enumerate(original(*args, start_step=start_step, **kwargs), start=start_step + 1):
            if step == NAN_STEP:
                batch = {**batch, "source_g_alexnet": np.full_like(np.asarray(batch["source_g_alexnet"]), np.nan)}
            yield batch

    workdir = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_batches, "gan_batches", poisoned)
        with pytest.raises(loop.NonFiniteLossError) as error:
            tasks.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
    return workdir, error.value


def test_non_finite_loss_stops_naming_step_and_term(stopped_run):
    _, error = stopped_run
    message = str(error)
    assert f"at step {NAN_STEP}" in message
    assert "g_feature_loss" in message and "d_loss" not in message, message
    assert "last good checkpoint is kept" in message


def test_non_finite_loss_keeps_the_last_good_checkpoint(stopped_run):
    workdir, _ = stopped_run
    assert os.listdir(workdir / "checkpoints") == [str(NAN_STEP - 1)]  # not the step after the NaN
    state, run_info, step = checkpointing.restore_state_tree(str(workdir / "checkpoints"))
    assert step == NAN_STEP - 1 and run_info["next_step"] == NAN_STEP - 1
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_checkpoints_keep_the_last_n_and_every_kth(tmp_path):
    """What a run's `checkpoint.keep_last` / `checkpoint.keep_every` ask of the
    checkpointer (`runlib.loop.open_run` passes them), on a small state."""
    checkpointer = checkpointing.TrainCheckpointer(str(tmp_path), keep_last=2, keep_every=3)
    for step in range(1, 8):
        checkpointer.save(step, {"w": np.full(3, step, np.float32)}, {"next_step": step})
    checkpointer.wait_until_finished()
    checkpointer.close()
    # the last two (6, 7) and the multiples of 3 (3, 6)
    assert sorted(os.listdir(tmp_path), key=int) == ["3", "6", "7"]
    state, run_info, step = checkpointing.restore_state_tree(str(tmp_path))
    assert step == 7 and run_info["next_step"] == 7 and state["w"].tolist() == [7.0] * 3


# ----------------------------------------------------------------------------- bfloat16
def test_bfloat16_compute_trains_finite_steps_with_float32_state():
    float32 = tiny_gan_config()
    config = tiny_gan_config()
    config.compute_dtype = "bfloat16"
    frozen = random_alexnet_params(config)
    # Parameters, statistics and optimizer states are float32 with either compute dtype,
    # and initialised alike: the float32 config's initial state (compiled as
    # tests/test_gan_step.py compiles it, so the compilation cache has it) is the start.
    mesh = parallel.make_mesh(jax.devices()[:1])
    init = jax.jit(lambda rng: gan.init_state(float32, rng), out_shardings=parallel.replicated(mesh))
    state = initial = init(jax.random.key(0))
    lowered = jax.jit(gan.make_train_step(config)).lower(state, random_batch(config, 0), frozen)
    assert "bf16" in lowered.as_text(), "the step does not compute in bfloat16"
    step = lowered.compile()
    for i in range(3):
        state, metrics = step(state, random_batch(config, i, target=i % 5, false=(i + 2) % 5), frozen)
        bad = [k for k, v in metrics.items() if not np.isfinite(float(v))]
        assert not bad, f"non-finite {bad} at step {i + 1}"
    for leaf in jax.tree.leaves((state.g_params, state.d_params, state.g_batch_stats, state.d_batch_stats,
                                 state.g_opt_state, state.d_opt_state)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(initial.g_params), jax.tree.leaves(state.g_params)))
    assert moved > 1e-3


def test_gan_loss_on_truth_scores_output_truth_and_input(main_runs, tmp_path):
    """benchmarks/gan_loss_on_truth.py on the quick run (with a random age evaluator and the
    pixel term turned on in its recorded config): every weighted total is the sum of its
    weighted terms, the input costs no pixel loss, D's scores on real faces cover every
    (group, condition) pair, and a run on other data is refused."""
    import shutil

    from ipcgan_jax.models import AgeEvaluator

    workdir, result = main_runs["quick"]
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    module = AgeEvaluator(stage_features=(4, 8), blocks_per_stage=1, num_groups=5, image_size=32)
    shutil.rmtree(run / "age_evaluator" / "export")
    checkpointing.save_variables(
        str(run / "age_evaluator" / "export"), module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
        {"task": "age_evaluator", "architecture": dict(stage_features=[4, 8], blocks_per_stage=1, num_groups=5,
                                                       image_size=32)})
    recorded = json.load(open(run / "config.json"))
    recorded["loss"]["pixel_weight"] = 7.0
    json.dump(recorded, open(run / "config.json", "w"))
    tool = benchmark_module("gan_loss_on_truth")

    report = tool.loss_terms(str(run), 3)
    weights = recorded["loss"]
    assert [row["group"] for row in report["groups"]] == [0, 1, 2, 3, 4]
    for row in report["groups"]:
        for name in ("output", "truth", "input"):
            terms = row[name]
            expected = (weights["gan_weight"] * terms["adversarial"] + weights["age_weight"] * terms["age"]
                        + weights["feature_weight"] * terms["feature"] + 7.0 * terms["pixel"])
            assert terms["weighted_total"] == pytest.approx(expected, abs=0.02 + 1e-3 * abs(expected))
        assert row["input"]["pixel"] == 0.0 and row["output"]["pixel"] > 0.0
    # D on real faces, by (true group, condition): every group's faces under every
    # condition, and the condition reaches D (a row is not one repeated score).
    on_real = report["discriminator_on_real"]
    assert on_real["faces_per_group"] == [3] * 5
    scores = np.asarray(on_real["rows_true_group_columns_condition"])
    assert scores.shape == (5, 5) and np.isfinite(scores).all()
    assert all(len(set(row)) > 1 for row in scores.tolist())
    assert tool.loss_terms(str(run), 3)["discriminator_on_real"] == on_real  # deterministic
    recorded["data"]["name"] = "utkface"
    json.dump(recorded, open(run / "config.json", "w"))
    with pytest.raises(SystemExit, match="needs a run on the synthetic faces"):
        tool.loss_terms(str(run), 3)
