"""Shared fixtures: float32/float64 parametrisation, the `full` and `gpu` markers."""

from __future__ import annotations

import contextlib
import os

# The CLI keeps compiled programs in the user's cache directory; the tests leave it alone
# (tests/test_devices.py turns the cache on explicitly, in a temporary directory).
os.environ.setdefault("TTSCALE_NO_CACHE", "1")

# ... but the suite shares one JAX persistent compilation cache of its own, made fresh for each run: a
# program (or an eagerly run operation) that one xdist worker, notebook kernel or child process compiled
# is loaded, not compiled again, by the others, as a user's second `ttscale` run loads it. Environment
# variables, so child processes inherit it; the controller makes the directory before the workers start
# and removes it at the end. Tests that need an empty or a private cache set their own directory.
if "TTSCALE_SUITE_XLA_CACHE" not in os.environ:
    import tempfile

    os.environ["TTSCALE_SUITE_XLA_CACHE"] = tempfile.mkdtemp(prefix="ttscale-suite-xla-")
    _SUITE_CACHE_OWNER = True
else:
    _SUITE_CACHE_OWNER = False
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["TTSCALE_SUITE_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax
import jax.numpy as jnp
import pytest


def pytest_addoption(parser):
    parser.addoption("--run-full", action="store_true", default=False,
                     help="run publication-size tests marked `full` (minutes to hours; meant for a GPU)")


def pytest_unconfigure(config):
    if _SUITE_CACHE_OWNER:
        import shutil

        shutil.rmtree(os.environ["TTSCALE_SUITE_XLA_CACHE"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    has_gpu = any(dev.platform != "cpu" for dev in jax.devices())
    skip_full = pytest.mark.skip(reason="full-size run: pass --run-full (meant for a GPU machine)")
    skip_gpu = pytest.mark.skip(reason="needs an accelerator; JAX sees only a CPU")
    for item in items:
        if "full" in item.keywords and not config.getoption("--run-full"):
            item.add_marker(skip_full)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


def x64_context(dtype):
    """Context manager enabling 64-bit JAX while ``dtype`` is float64."""
    if jnp.dtype(dtype) == jnp.float64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32 and (with x64 enabled for its duration) in float64."""
    dt = jnp.dtype(request.param)
    with x64_context(dt):
        yield dt


def rtol_for(dtype) -> float:
    return 2e-4 if jnp.dtype(dtype) == jnp.float32 else 1e-10
