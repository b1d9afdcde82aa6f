"""ttscale._checks.float_array: the host fast path must give exactly what jnp.asarray gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttscale import _checks

INPUTS = [np.arange(6.0).reshape(2, 3), np.arange(6, dtype=np.float32), np.arange(4, dtype=np.int32),
          np.arange(3, dtype=np.uint8), np.full((), 2.5), np.asfortranarray(np.ones((3, 2)))]
DTYPES = [None, jnp.float32, np.float64, jnp.bfloat16, "float16"]


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")  # asked for without x64: JAX's own warning
@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("i", range(len(INPUTS)))
def test_float_array_matches_jnp_asarray(i, dtype, x64):
    """Host arrays and device arrays: the same values, dtype, weak type and shape as ``jnp.asarray`` (after the
    int → default-float promotion), under both x64 modes."""
    x = INPUTS[i]
    with jax.enable_x64(x64):
        for given in (x, jnp.asarray(x)):
            want_dtype = dtype if dtype is not None or np.dtype(given.dtype).kind == "f" else jnp.result_type(float)
            want = jnp.asarray(given, want_dtype)
            got = _checks.float_array("x", given, dtype)
            assert isinstance(got, jax.Array)
            assert got.dtype == want.dtype and got.shape == want.shape and got.weak_type == want.weak_type
            np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_float_array_keeps_a_device_array_of_the_dtype_and_copies_a_host_one():
    dev = jnp.ones(3, jnp.float32)
    assert _checks.float_array("x", dev) is dev and _checks.float_array("x", dev, jnp.float32) is dev
    # the result neither aliases the caller's buffer nor reads it late (a bare device_put did both, on ~30 % of
    # these sizes: the transfer is asynchronous and may share aligned host memory on CPU)
    changed = 0
    for size in range(1000, 1200):
        host = np.ones(size, np.float32)
        out = _checks.float_array("x", host)
        host[0] = 5.0
        changed += np.asarray(out)[0] != 1.0
    assert changed == 0


def test_float_array_traced_and_python_inputs_keep_jnp_semantics():
    assert _checks.float_array("x", 1.5).weak_type  # a Python float stays weakly typed
    out = jax.jit(lambda v: _checks.float_array("x", v, jnp.float32) * 2)(jnp.arange(3))
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    with pytest.raises(TypeError, match="x must be a real floating-point array"):
        _checks.float_array("x", np.ones(2, complex))
