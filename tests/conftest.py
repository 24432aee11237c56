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
