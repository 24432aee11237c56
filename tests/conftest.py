"""Test set-up: 8 simulated CPU devices (for the data-parallel tests) and a persistent
compilation cache so that the same step compiled twice (e.g. resume tests) compiles once."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("IPCGAN_TEST_JAX_CACHE", "/tmp/ipcgan_jax_test_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# The suite runs in two xdist workers, a whole file each (pyproject.toml). Starting the
# longest files first keeps both workers busy to the end instead of leaving one file
# running alone (longest-first scheduling); the rest keep their order.
_LONGEST_FILES_FIRST = ("test_train.py", "test_multiprocess.py", "test_run_claims.py", "test_classifiers.py",
                        "test_notebook.py", "test_golden_tf.py", "test_serve.py", "test_evaluation.py",
                        "test_gan_step.py", "test_golden_step.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = os.path.basename(str(item.path))
        return _LONGEST_FILES_FIRST.index(name) if name in _LONGEST_FILES_FIRST else len(_LONGEST_FILES_FIRST)
    items.sort(key=rank)  # stable: the order within a file and among the others is kept
