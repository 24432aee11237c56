"""SIGKILL at random moments, resume, compare bit for bit: does a killed run continue the
exact trajectory?

    python benchmarks/fault_injection.py [--kills=20] [--seed=0] [--json=out.json]

Runs `main.py --config=configs/g75_conv5.py:quick` (its three small networks, then the
GAN) uninterrupted, twice (they must agree; the second times a run). Then, in fresh
workdirs, runs the same command again and again, killing it with SIGKILL (no chance to
clean up: its lock, temporary checkpoint folders and staged exports stay behind) at
random moments, and reruns it after each kill until it completes. Some kills wait for a
random time (up to a run's duration), the others for the k-th asynchronous save to be in
flight (an `*.orbax-checkpoint-tmp` folder exists) and kill then. When a run completes,
the final parameters (the GAN's last checkpoint and the three exported networks) are
compared with the uninterrupted run's, array by array, bit for bit; the next kills go to
a fresh workdir. A kill counts as recovered when the run it interrupted was resumed and
completed with identical parameters; the report's `recovered` is N/N.

Every process shares one persistent compilation cache (the same compiled programs), so the
comparison is of the training, not of compilers. Takes about 30 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import datetime
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from json_report import print_report  # noqa: E402

CONFIG = "configs/g75_conv5.py:quick"
SUB_RUNS = ("alexnet_identity", "age_classifier", "age_evaluator")
TMP_MARK = ".orbax-checkpoint-tmp"


def run_command(workdir: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "main.py"), f"--config={CONFIG}", f"--workdir={workdir}"]


def checkpoint_dirs(workdir: str) -> list[str]:
    return [os.path.join(workdir, "checkpoints")] + [os.path.join(workdir, s, "checkpoints") for s in SUB_RUNS]


def saves_in_flight(workdir: str) -> set[str]:
    """The temporary folders of the asynchronous saves now in flight."""
    found = set()
    for directory in checkpoint_dirs(workdir):
        try:
            found.update(os.path.join(directory, e.name) for e in os.scandir(directory) if TMP_MARK in e.name)
        except FileNotFoundError:
            pass
    return found


def final_parameters(workdir: str) -> dict[str, np.ndarray]:
    """The GAN's last checkpoint and the exported networks, flattened to name -> array."""
    import jax

    from ipcgan_jax import checkpointing

    state, _, step = checkpointing.restore_state_tree(os.path.join(workdir, "checkpoints"))
    trees = {"gan": state}
    for name in SUB_RUNS:
        trees[name] = checkpointing.load_variables(os.path.join(workdir, name, "export"))[0]
    flat = {"gan/step": np.asarray(step)}
    for prefix, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            flat[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return flat


def mismatches(got: dict, expected: dict) -> list[str]:
    if sorted(got) != sorted(expected):
        return [f"different arrays: {sorted(set(got) ^ set(expected))[:5]}"]
    return [k for k in expected if got[k].dtype != expected[k].dtype or got[k].tobytes() != expected[k].tobytes()]


def start(workdir: str, log_path: str, env: dict) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(run_command(workdir), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def tail(path: str, chars: int = 1500) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")[-chars:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save_fraction", type=float, default=0.35,
                        help="share of the kills that wait for an asynchronous save in flight")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scratch = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="fault_injection_"))
    os.makedirs(scratch, exist_ok=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(scratch, "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", TF_CPP_MIN_LOG_LEVEL="2")

    # Twice: the first fills the compilation cache, the second (which must agree) times a
    # run as the killed ones run.
    references, reference_s = [], 0.0
    for name in ("uninterrupted", "uninterrupted_warm"):
        began = time.perf_counter()
        proc = start(os.path.join(scratch, name), os.path.join(scratch, f"{name}.log"), env)
        if proc.wait() != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{tail(os.path.join(scratch, f'{name}.log'))}")
        reference_s = time.perf_counter() - began
        references.append(final_parameters(os.path.join(scratch, name)))
    expected = references[0]
    if mismatches(references[1], expected):
        raise SystemExit("two uninterrupted runs disagree: the comparison would mean nothing")

    kills, chains, errors = [], [], []
    chain_index, chain_kills = 0, []
    workdir = os.path.join(scratch, f"chain_{chain_index}")
    while True:
        log_path = workdir + ".log"
        before = saves_in_flight(workdir)  # left by earlier kills (of sub-runs done since: never cleaned)
        proc = start(workdir, log_path, env)
        if len(kills) < args.kills:
            began = time.perf_counter()
            if rng.random() < args.save_fraction:
                mode, wanted, seen = "during save", rng.randint(1, 3), set()
                while proc.poll() is None:
                    seen |= saves_in_flight(workdir) - before
                    if len(seen) >= wanted:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.003)
            else:
                mode, delay = "random time", rng.uniform(0.0, reference_s)
                while proc.poll() is None and time.perf_counter() - began < delay:
                    time.sleep(0.01)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
            if proc.wait() == -signal.SIGKILL:
                in_flight = saves_in_flight(workdir) - before
                killed = {"chain": chain_index, "mode": mode, "after_s": round(time.perf_counter() - began, 2),
                          "saves_in_flight": sorted(os.path.relpath(p, workdir) for p in in_flight)}
                kills.append(killed)
                chain_kills.append(killed)
                continue
        if proc.wait() != 0:  # neither killed nor completed: a resume failed
            errors.append({"chain": chain_index, "returncode": proc.returncode, "log_tail": tail(log_path)})
            chains.append({"chain": chain_index, "kills": len(chain_kills), "completed": False})
        else:
            bad = mismatches(final_parameters(workdir), expected)
            chains.append({"chain": chain_index, "kills": len(chain_kills), "completed": True,
                           "identical": not bad, "mismatched_arrays": bad[:10]})
            for kill in chain_kills:
                kill["recovered"] = not bad
        if len(kills) >= args.kills:
            break
        chain_index, chain_kills = chain_index + 1, []
        workdir = os.path.join(scratch, f"chain_{chain_index}")

    recovered = sum(1 for k in kills if k.get("recovered"))
    print_report({
        "benchmark": "fault_injection", "config": CONFIG, "seed": args.seed,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "uninterrupted_run_s": round(reference_s, 1), "kills": len(kills),
        "kills_during_saves": sum(1 for k in kills if k["saves_in_flight"]),
        "recovered": f"{recovered}/{len(kills)}", "chains": chains, "errors": errors, "kill_log": kills,
        "scratch": scratch,
    }, args.json)


if __name__ == "__main__":
    main()
