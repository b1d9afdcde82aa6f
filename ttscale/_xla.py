"""XLA compile options that ttscale passes on the CPU, each measured on the jaxlib series it is passed to.

``xla_cpu_use_fusion_emitters=False`` selects XLA's legacy loop-fusion emitters instead of its newer MLIR
fusion emitters: the same numbers, faster for the programs that draw normals (the sweep's independent-prompt
chunk program; :func:`ttscale.prompts.sample_prompts`, warm, 4096 prompts of d = 8, m = 40: 0.013-0.022 s against
0.053 s, ``python benchmarks/first_calls.py`` on a 2-core VM, ``benchmarks/RESULTS.md``). An option XLA does not know fails the compile
("No such compile option"), so it is passed only to the jaxlib series it was measured on, and only on the CPU.
"""

from __future__ import annotations

import functools

LEGACY_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
LEGACY_EMITTERS_JAXLIB = ("0.10",)


def legacy_emitters_known(series=LEGACY_EMITTERS_JAXLIB) -> bool:
    """Whether this jaxlib's major.minor is one of ``series`` (where :data:`LEGACY_EMITTERS` was measured)."""
    import jaxlib

    return ".".join(jaxlib.__version__.split(".")[:2]) in tuple(series)


def cpu_jit(fn, **jit_kwargs):
    """``jax.jit(fn, **jit_kwargs)``, compiled with :data:`LEGACY_EMITTERS` when the default backend is the CPU
    and the jaxlib series is one they were measured on. Inside another ``jit`` (or ``vmap``, ``grad``) it is the
    plain ``jit``, traced in place as usual."""
    import jax

    plain = jax.jit(fn, **jit_kwargs)
    legacy = jax.jit(fn, compiler_options=dict(LEGACY_EMITTERS), **jit_kwargs) if legacy_emitters_known() else plain

    from jax._src import core  # trace_state_clean: no public equivalent in jax 0.10

    @functools.wraps(fn)
    def call(*args, **kwargs):
        top_level = core.trace_state_clean()  # compiler options are refused on a jit nested in another trace
        return (legacy if top_level and jax.default_backend() == "cpu" else plain)(*args, **kwargs)

    return call
