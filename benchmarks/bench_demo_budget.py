"""The demo's training steps under the settings that decide its 15-minute budget; prints JSON.

The demo (configs/demo.py) trains three small networks, then the GAN. For each small
network's training step this times two conv implementations side by side, in fresh
subprocesses run alternately (A B A B ..., `--rounds`), because load on a shared machine
drifts over minutes; the GAN step runs for scale, in the demo's setting both times:

  trunk      the identity trunk's step (alexnet_identity, batch 16): conv_impl
             'xla_per_group' (the demo's) against 'onednn'
  age_head   the age head's step on the frozen trunk (age_classifier, batch 32):
             'xla_per_group' (the demo's before 2026-11-30) against 'onednn' (now)
  evaluator  the age evaluator's step (age_evaluator, batch 32): 'xla' (before) against
             'onednn' (now)
  gan        the GAN step (batch 16, 'onednn'): A and B the same program

Every program is the real compiled step of the demo's config (classifiers.train /
gan.make_train_step), on random inputs of the demo's shapes. Per run: median / min / max
ms over `--steps` timed steps after `--warmup`, and per step the page faults and the
kernel's CPU time (getrusage). Per program: the per-round medians, and the ratio of A's
median to B's (above 1: B faster).

Usage:
  python benchmarks/bench_demo_budget.py [--programs trunk age_head evaluator gan]
      [--rounds 2] [--steps 60] [--warmup 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

from bench_step import make_step_inputs  # noqa: E402
from json_report import print_report, run_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# program -> (task, the setting compared, A (before), B (now))
COMPARISONS = {
    "trunk": ("alexnet_identity", "conv_impl", "xla_per_group", "onednn"),
    "age_head": ("age_classifier", "conv_impl", "xla_per_group", "onednn"),
    "evaluator": ("age_evaluator", "conv_impl", "xla", "onednn"),
    "gan": ("gan", "conv_impl", "onednn", "onednn"),
}


def _demo_config(task: str):
    sys.path.insert(0, ROOT)
    from configs import demo

    config = demo.get_config()
    return config if task == "gan" else config.pretrain[task]


def _classifier_program(config, rng):
    """(compiled step, state, batch, frozen) of a classifier task of the demo."""
    import types

    import jax
    import jax.numpy as jnp

    from ipcgan_jax import gan
    from ipcgan_jax.classifiers import tasks, train

    n, alexnet_size = config.batch_size, config.data.alexnet_size
    labels = config.model.alexnet.num_identities if config.task == "alexnet_identity" else 5
    faces = types.SimpleNamespace(age_group=rng.integers(0, 5, 1000), identity_names=None, name="random")
    trunk = None
    if config.task == "age_classifier":
        trunk = jax.tree.map(lambda x: x * 0.25, jax.jit(gan.build_alexnet(config).init)(
            jax.random.key(1), jnp.zeros((1, alexnet_size, alexnet_size, 3)))["params"])
    task = tasks.build_task(config, faces, trunk, rng.permutation(labels))
    size = task.image_size  # what the pipeline feeds this network
    optimizer = train.make_optimizer(config, task.head_layers)
    variables = task.init_variables(jax.random.key(config.seed))
    state = train.ClassifierState(step=jnp.zeros((), jnp.int32), apply_fn=task.apply, params=variables["params"],
                                  tx=optimizer, opt_state=optimizer.init(variables["params"]),
                                  batch_stats=variables["batch_stats"])
    batch = jax.device_put({"image": rng.uniform(-120, 130, (n, size, size, 3)).astype("float32"),
                            "label": rng.integers(0, labels, n).astype("int32"),
                            "age_group": rng.integers(0, 5, n).astype("int32")})
    step = jax.jit(train.make_train_step(task, config.seed), donate_argnums=(0,))
    return step, state, batch, task.frozen


def _gan_program(config, rng):
    """(compiled step, state, batch, frozen) of the demo's GAN: bench_step's random batch and
    scaled random AlexNet."""
    import jax

    from ipcgan_jax import gan

    del rng  # bench_step's inputs have their own seed
    pool, frozen = make_step_inputs(config, seed=0, pool_size=1)
    state = jax.jit(lambda: gan.init_state(config, jax.random.key(config.seed)))()
    step = jax.jit(gan.make_train_step(config), donate_argnums=(0,))
    return step, state, pool[0], frozen


def run_worker(args) -> dict:
    task, setting, _, _ = COMPARISONS[args.worker]
    import jax
    import numpy as np

    config = _demo_config(task)
    config[setting] = args.value
    rng = np.random.default_rng(0)
    program = _gan_program if task == "gan" else _classifier_program
    step, state, batch, frozen = program(config, rng)
    for _ in range(args.warmup):
        state, metrics = step(state, batch, frozen)
    jax.block_until_ready(metrics)
    times = []
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch, frozen)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ms = [t * 1000 for t in times]
    return {"program": args.worker, setting: args.value, "median_ms": round(statistics.median(ms), 2),
            "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2), "steps": args.steps,
            "page_faults_per_step": round((usage.ru_minflt - usage_before.ru_minflt) / args.steps, 1),
            "system_cpu_ms_per_step": round((usage.ru_stime - usage_before.ru_stime) * 1000 / args.steps, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", nargs="+", default=list(COMPARISONS), choices=list(COMPARISONS))
    parser.add_argument("--rounds", type=int, default=2, help="A B alternations per program")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation included)")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    parser.add_argument("--worker", choices=list(COMPARISONS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--value", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print_report(run_worker(args), indent=None)
        return 0
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one device, as the demo
    report = {"cores": os.cpu_count(), "steps": args.steps, "warmup": args.warmup, "programs": {}}
    for name in args.programs:
        task, setting, before, now = COMPARISONS[name]
        runs = {before: [], now: []}
        for _ in range(args.rounds):
            for value in dict.fromkeys((before, now)):  # the GAN's one setting once per round
                runs[value].append(run_json([sys.executable, os.path.abspath(__file__), "--worker", name,
                                             "--value", value, "--steps", str(args.steps),
                                             "--warmup", str(args.warmup)], env=env))
        entry = {"task": task, "setting": setting, "a": before, "b": now, "runs": runs}
        if before != now and not any("error" in r for r in runs[before] + runs[now]):
            med = {v: statistics.median(r["median_ms"] for r in runs[v]) for v in runs}
            entry.update({"a_median_ms": med[before], "b_median_ms": med[now],
                          "a_over_b": round(med[before] / med[now], 3),
                          "a_over_b_per_round": [round(a["median_ms"] / b["median_ms"], 3)
                                                 for a, b in zip(runs[before], runs[now])]})
        report["programs"][name] = entry
    print_report(report, args.json)
    failed = [name for name, e in report["programs"].items()
              if any("error" in r for runs in e["runs"].values() for r in runs)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
