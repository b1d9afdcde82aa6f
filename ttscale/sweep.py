"""Sweep engine: CoT error of any model over spectra × training lengths n × test lengths m × steps k.

    spec = SweepSpec(d=20, spectra="power_law:alpha=0:2:16", ns=(5, 10, 20, 40, 80), ms=(40,),
                     k_max=32, prompts=4096, model="pseudo_newton")   # or "gd:eta=0.5", "lsa", a Model
    ds = run_sweep(spec, out="sweepA.nc")        # xarray.Dataset, dims spectrum, n, m, k

For every cell (spectrum s, training length n, test length m) the engine draws ``prompts``
test prompts ``X = Σ_s^{1/2} Z``, ``w ~ N(0, I_d)``, ``y = Xᵀw + σ ε`` (:mod:`ttscale.prompts`),
gives them to the model with the parameters ``model.init(Λ_s, n)`` (:mod:`ttscale.models`) and
records ``||ŵ_k − w||²`` for ``k = 0..k_max``. The Dataset holds the mean, standard error and
median over prompts and, when the model is a fixed preconditioner ``P``, the closed forms of
:mod:`ttscale.theory` evaluated in float64 on the same grid.

The engine owns only the organisation (none of it changes the numbers):

* **Models.** It calls ``model.init`` (``vmap``-ed over spectra × n, in float64) and
  ``model.errors`` — nothing else; a model defined outside the package runs like a built-in.
  Statistics-reading models get :class:`~ttscale.prompts.Statistics` (whitened: ``S_Z = Z Zᵀ/m``
  shared, the cell's root ``A = Σ^{1/2}``), prompt-reading models get the raw prompts.
* **Sampler** (``SweepSpec.sampler``). For a statistics-reading model and ``d ≤ m < ∞`` the default
  (``"auto"``/``"statistics"``) draws the whitened statistics directly, without the prompt
  (:func:`ttscale.prompts.draw_statistics`, Bartlett): ``S_Z = L Lᵀ/m`` with ``L`` lower triangular,
  ``L_ii² ~ χ²_{m−i+1}``, ``L_ij ~ N(0, 1)``; with noise ``g = L h/m``, ``εᵀε/m = (||h||² + χ²_{m−d})/m``,
  ``h ~ N(0, I_d)``. The same law as the statistics of drawn prompts, at ``d(d − 1)/2 + d`` normals
  and ``d (+1)`` χ² per prompt instead of ``d m (+ m)``: the cost no longer grows with ``m``.
  ``sampler="prompts"`` (and every prompt-reading model, ``m < d`` and ``m = ∞``) draws the prompt
  ``Z`` (:func:`ttscale.prompts.draw_normals`), so each prompt is the one ``sample_prompts`` draws.
  The two give different numbers with the same law; the one that ran is in :meth:`SweepSpec.identity`.
* **Randomness.** Cell ``(s, i_n, i_m)`` has the key ``fold_in(fold_in(fold_in(key(seed), i_m), s),
  i_n)``; prompt ``p`` is prompt ``p`` of that key in the one counter-based sampler
  (:func:`ttscale.prompts.draw_normals` or :func:`ttscale.prompts.draw_statistics`), so results do
  not depend on the chunk size, the number or order of devices, or the order in which cells run (the
  scheme is versioned by :data:`SAMPLER` / :data:`~ttscale.sweep_spec.STATISTICS_SAMPLER`, part of
  :meth:`SweepSpec.identity`). With ``common_random_numbers=True`` the key is
  ``fold_in(key(seed), i_m)``: every spectrum and ``n`` of one ``m`` sees the *same* base normals
  (``S_Z`` computed once per prompt and shared), so differences between cells have smaller spread
  while each cell's marginal law is unchanged. ``m = ∞`` draws only ``w`` (``S_m = Σ`` exactly).
* **Kernels.** Prompts run in cache-resident blocks of :data:`_PROMPT_BLOCK` (all ``k_max``
  steps on a block before the next); cells are ``vmap``-ed in groups — with common random
  numbers a group shares ``S_Z``, so a pseudo-Newton step becomes one small GEMM per prompt.
* **Compilation.** One ``jax.jit`` program per test length ``m`` (a shape), taking the chunk's
  first prompt index, the keys and the per-cell parameters and roots as traced arguments: every
  chunk and every cell of that shape reuses it.
* **Devices.** The prompts of a chunk are split over every device with ``shard_map`` (no
  communication); multi-host after ``jax.distributed.initialize()``, where process 0 writes. On a
  CPU, call :func:`ttscale.use_cpu_cores` first to get one device per core (the CLI does).
* **Statistics in bounded memory.** Each chunk returns, per cell and ``k``, the mean and sum of
  squared deviations of its prompts (:func:`ttscale.summary.chunk_moments`, on the device) and the per-prompt
  errors; the host merges moments exactly and keeps the per-prompt errors only for the exact
  median (:mod:`ttscale.summary`): in RAM up to :data:`HOST_MEMORY` bytes per ``m``, beyond that in
  a file next to ``out``, reduced slab by slab.
* **Resumption.** With ``out`` each finished chunk is saved atomically (:mod:`ttscale.store`); a
  rerun loads finished chunks and computes only the rest, bit for bit the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttscale import _checks, _xla, aot, devices, models, summary, theory
from ttscale import spectra as spectra_mod
from ttscale.prompts import Statistics, draw_normals, draw_statistics, prompts_from_root, whitened_statistics
from ttscale.spectra import Covariance
from ttscale.sweep_spec import SAMPLER, STATISTICS_SAMPLER, SweepSpec  # noqa: F401  (re-exported: ttscale.sweep.SweepSpec)

_MEMORY_BUDGET = 128 * 2**20  # bytes of per-cell working memory per chunk (sets the cell group size)
_INDEPENDENT_GROUP = 2  # at most this many cells vmapped together when each draws its own prompts (sweep-A: 2 and 4 within noise, 1 and 8 slower)
_PROMPT_BLOCK = 16  # prompts per cache-resident block: all k steps run on a block before the next (8 beat 4096 by ~2-4x on CPU;
# `python benchmarks/engine_settings.py`, sweep-A chunk program, 2 devices, two rounds of medians of 7: 16 vs 8 prompts
# 0.130 / 0.137 vs 0.142 / 0.151 s with common random numbers, within noise for independent prompts and gd)


def _on_trace(shape, start) -> None:
    """Called once each time a chunk program is traced, with its static ``shape`` and traced ``start``.

    A no-op; tests wrap it in ``chex.assert_max_traces`` to prove that one compiled program serves
    every chunk and every cell of a shape (no recompilation per chunk, per cell or per seed).
    """

# ============================================================================ per-cell inputs
def _x64():
    return jax.enable_x64(True)


def cell_parameters(spec: SweepSpec):
    """Float64 parameters of every (spectrum, n) cell: ``model.init(Λ_s, n)``, leaves ``[S, N, ...]`` (NumPy)."""
    if spec.params is not None:
        return spec.params
    model = spec.model_object
    with _x64():
        train = spec.training_covariances(jnp.float64)
        ns = np.asarray(spec.ns, np.float64)
        params = _run_program(_named("sweep.grid_map", model.init), _grid_map(model.init), (train, ns))
        return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)


@functools.lru_cache(maxsize=64)
def _grid_map(init):
    """``jit(vmap(vmap(init)))`` over spectra × n, compiled once per model function and grid shape."""
    return jax.jit(jax.vmap(jax.vmap(init, in_axes=(None, 0)), in_axes=(0, None)))


@functools.lru_cache(maxsize=64)
def _cells_map(fn):
    """``jit(vmap(vmap(fn)))`` over the ``[S, N]`` cell axes of a parameter pytree."""
    return jax.jit(jax.vmap(jax.vmap(fn)))


def _named(prefix: str, fn) -> Optional[str]:
    """``prefix(module.qualname)`` of a ttscale function (:func:`ttscale.aot.stable_name`), else ``None``."""
    name = aot.stable_name(fn)
    return None if name is None else f"{prefix}({name})"


def _run_program(name: Optional[str], jitted, args: tuple, static: Optional[dict] = None):
    """``jitted(*args, **static)``; through an executable kept on disk (:mod:`ttscale.aot`) when that is on.

    Off (the plain ``jit`` call) when ``name`` is ``None`` (code outside ttscale), when :func:`ttscale.aot.enable`
    was not called, or in a multi-process job.
    """
    if name is None or not _keeps_programs():
        return jitted(*args, **(static or {}))
    return aot.call(name, jitted, args, static)


def _keeps_programs() -> bool:
    """Compiled programs go through :mod:`ttscale.aot`'s directory: it is on and this is a single-process job."""
    return aot.directory() is not None and jax.process_count() == 1


#: :func:`ttscale.theory.on_grid` as one compiled program (op by op it was ~23 small programs to trace,
#: lower and load on every run: ~1.2 s of a CLI sweep's fixed cost).
_on_grid = jax.jit(theory.on_grid, static_argnames=("k_max",))


#: per-spectrum facts of the grid as compiled programs (op by op each jnp call is a small program to trace and load)
_hardness = jax.jit(spectra_mod.hardness)
_roots = jax.jit(Covariance.root)


def theory_on_grid(spec: SweepSpec, params=None) -> Optional[dict]:
    """The closed forms of :mod:`ttscale.theory` on the sweep grid, in float64 (NumPy), or ``None``.

    ``None`` when the model declares no preconditioner. Otherwise, with ``P = model.preconditioner``
    of each cell: ``limit_error [S, N, K+1]`` (``||(I − PΣ)^k||_F²``), ``one_step_error [S, N, M]``,
    ``scaling_law_error [S, N, K+1]`` (``d (1 + n/(1 + Hard Λ))^{-2k}``), ``overthinking_term [S, N, K+1]``
    (``tr M^{2k}``, ``M = I − Γ^{-1/2} Σ Γ^{-1/2}``, ``Γ = sym(P)⁻¹``; ``nan`` where ``sym(P)`` is not
    positive definite), ``best_k``, ``turns_up``, ``spectral_radius [S, N]`` (:func:`ttscale.theory.best_k`;
    ``best_k = 0`` when ``k_max = 0``) and ``hardness [S]``.
    """
    model = spec.model_object
    if model.preconditioner is None:
        return None
    params = cell_parameters(spec) if params is None else params
    with _x64(), jax.default_device(jax.local_devices(backend="cpu")[0]):
        P = _run_program(_named("sweep.cells_map", model.preconditioner), _cells_map(model.preconditioner),
                         (jax.tree_util.tree_map(jax.device_put, params),))
        out = _run_program("theory.on_grid", _on_grid, (
            P, spec.training_covariances(jnp.float64), spec.test_covariances(jnp.float64),
            np.asarray(spec.ns, np.float64), np.asarray(spec.ms, np.float64), np.float64(spec.noise)),
            {"k_max": spec.k_max})
        return {k: np.asarray(v) for k, v in out.items()}


def _device_count() -> int:
    return jax.device_count()


def _fetch(x) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ============================================================================ compiled chunk program
@dataclasses.dataclass(frozen=True)
class _Shape:
    """Static (shape-defining) settings of one compiled chunk program."""

    d: int
    m: Optional[int]  # None = inf
    k_max: int
    batch: int  # prompts per call (padded chunk), divisible by the device count
    cells: int
    cell_group: int
    crn: bool
    noisy: bool
    dtype: str
    n_devices: int
    errors: Any  # model.errors
    reads: str
    groups: bool  # model.groups: errors(..., group=True) takes a group of cells sharing S_Z
    hints: tuple  # sorted (name, value) pairs of model.hints
    bartlett: bool = False  # draw (S_Z, g, ee, w) directly (SweepSpec.draws_statistics), not prompts


def _drawn_per_prompt(d: int, m: Optional[int], bartlett: bool) -> int:
    """Numbers one prompt's draw holds: ``Z``, ``ε``, ``S_Z``, ``g``, ``w`` (prompts) or ``L``, ``S_Z``, ``h``, ``g``, ``w``, χ² (Bartlett)."""
    if bartlett:
        return 2 * d * d + 4 * d + 2
    return d * (m or 0) + d * d + (m or 0) + 2 * d


def _cell_group(d: int, m: Optional[int], k_max: int, local: int, cells: int, crn: bool, dtype,
                groups: bool = False, bartlett: bool = False) -> int:
    """Cells run together: as many as fit :data:`_MEMORY_BUDGET`, a divisor of ``cells``."""
    per_prompt = 2 * (k_max + 1) + (0 if groups else 3 * (d + 1) ** 2 // _PROMPT_BLOCK)
    if not crn:
        per_prompt += _drawn_per_prompt(d, m, bartlett)
    group = int(max(1, min(_MEMORY_BUDGET // max(1, per_prompt * local * jnp.dtype(dtype).itemsize), cells)))
    if not crn:
        # fresh prompts per cell: small groups keep each cell's draws in cache (measured on sweep-A)
        group = min(group, _INDEPENDENT_GROUP)
    while cells % group:  # a divisor: lax.map then compiles no remainder pass
        group -= 1
    return group


_DRAW_BLOCK = 256  # prompts per cell drawn at a time (independent prompts; sweep-A: 256 ~10 % faster than 2048, 64 no better)


def _draw_block(local: int) -> int:
    """Prompts drawn at a time per cell (independent prompts): the largest divisor of ``local`` up to :data:`_DRAW_BLOCK`."""
    return max(size for size in range(1, min(_DRAW_BLOCK, local) + 1) if local % size == 0 and size % _PROMPT_BLOCK == 0
               ) if local % _PROMPT_BLOCK == 0 else local


def _blocks(x, block: int):
    """``[b, ...]`` → ``[b / block, block, ...]`` (``None`` stays ``None``)."""
    return None if x is None else x.reshape((x.shape[0] // block, block) + x.shape[1:])


def _draw(key_data, first, shape: _Shape, count: Optional[int] = None):
    """Per-prompt base arrays of ``local`` prompts: ``(S_Z, g, ee, w)`` for statistics, ``(Z, ε, w)`` for prompts.

    Statistics come from :func:`~ttscale.prompts.draw_statistics` (Bartlett) when ``shape.bartlett``,
    else from the drawn prompt (:func:`~ttscale.prompts.whitened_statistics` of
    :func:`~ttscale.prompts.draw_normals`); both are counter-based in the prompt index.
    """
    local = shape.batch // shape.n_devices if count is None else count
    key = jax.random.wrap_key_data(key_data)
    if shape.bartlett:
        return draw_statistics(key, first, local, shape.d, shape.m, jnp.dtype(shape.dtype), shape.noisy)
    Z, w, eps = draw_normals(key, first, local, shape.d, shape.m, jnp.dtype(shape.dtype), shape.noisy)
    if shape.reads == "prompts":
        return (Z, eps, w)
    st = whitened_statistics(Z, w, eps, jnp.ones((shape.d,), w.dtype), 0.0, shape.m)
    return (st.S_Z, st.g, st.ee, st.w)


def _data(base, cell, shape: _Shape):
    """What the model reads for one cell, from per-prompt base arrays and the cell's root ``A`` and ``σ``."""
    if shape.reads == "prompts":
        Z, eps, w = base
        return prompts_from_root(Z, w, eps, cell["root"], cell["noise"])
    S_Z, g, ee, w = base
    return Statistics(S_Z, g, ee, w, cell["root"], cell["noise"], math.inf if shape.m is None else float(shape.m))


def _block_errors(base, cells, shape: _Shape, vmapped: bool):
    """Errors ``[(G,) K+1, b]`` of one cell (or a ``vmap``-ed group) over cache-resident prompt blocks."""
    b = base[-1].shape[0]  # w, last in both layouts
    block = max(size for size in range(1, min(_PROMPT_BLOCK, b) + 1) if b % size == 0)
    hints = dict(shape.hints)

    def one(cell, blk):
        return shape.errors(cell["params"], _data(blk, cell, shape), shape.k_max, **hints)  # [block, K+1]

    if vmapped and shape.groups:  # the model lays out a group of cells itself (Model.groups)
        def run(cells, blk):
            return shape.errors(cells["params"], _data(blk, cells, shape), shape.k_max, group=True, **hints)  # [G, block, K+1]
    else:
        run = jax.vmap(one, in_axes=(0, None)) if vmapped else one
    out = jax.lax.map(lambda blk: run(cells, blk), tuple(_blocks(x, block) for x in base))  # [nb, (G,) block, K+1]
    out = jnp.moveaxis(out, 0, -3)  # [(G,) nb, block, K+1]
    out = out.reshape(out.shape[:-3] + (b, shape.k_max + 1))
    return jnp.swapaxes(out, -1, -2)


@functools.lru_cache(maxsize=32)
def _chunk_program(shape: _Shape):
    """``program(keys, cells, start, valid) -> (errors [cells, k_max + 1, batch], scale, mean, m2 [devices, cells, k_max + 1])``.

    ``keys``: raw threefry key data, ``[2]`` (common random numbers) or ``[cells, 2]``; ``cells``:
    per-cell ``params`` (the model's pytree), ``root`` and ``noise``; ``start``: index of the chunk's
    first prompt; ``valid``: how many of the ``batch`` prompts are real (padding is excluded from
    the moments). Jitted and ``shard_map``-ped: each device runs its own prompts.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = devices.prompt_mesh(shape.n_devices)
    local = shape.batch // shape.n_devices

    def device_program(keys, cells, start, valid):
        _on_trace(shape, start)
        offset = (jax.lax.axis_index("prompts") * local).astype(jnp.uint32)
        first = start + offset
        in_chunk = jnp.clip(valid - offset.astype(jnp.int32), 0, local)  # real prompts on this device
        G = shape.cell_group
        if shape.crn:
            base = _draw(keys, first, shape)
            groups = jax.tree_util.tree_map(lambda x: x.reshape((shape.cells // G, G) + x.shape[1:]), cells)
            errs = jax.lax.map(lambda grp: _block_errors(base, grp, shape, vmapped=True), groups)
            errs = errs.reshape((shape.cells,) + errs.shape[2:])
        else:
            draw_block = _draw_block(local)

            def per_cell(cell):
                if draw_block == local:
                    return _block_errors(_draw(cell["key"], first, shape), cell, shape, vmapped=False)

                def one(i):  # draw a cache-resident block of prompts, then run every k on it
                    start = first + (i * draw_block).astype(jnp.uint32)
                    return _block_errors(_draw(cell["key"], start, shape, draw_block), cell, shape, vmapped=False)

                out = jax.lax.map(one, jnp.arange(local // draw_block, dtype=jnp.uint32))  # [nb, K1, block]
                return jnp.moveaxis(out, 0, 1).reshape(out.shape[1], local)

            errs = jax.lax.map(per_cell, dict(cells, key=keys), batch_size=G)
        scale, mean, m2 = summary.chunk_moments(errs, in_chunk)
        return errs, scale[None], mean[None], m2[None]

    P = PartitionSpec
    program = devices.shard_map(device_program, mesh, in_specs=(P(), P(), P(), P()),
                         out_specs=(P(None, None, "prompts"), P("prompts"), P("prompts"), P("prompts")))
    replicated = NamedSharding(mesh, P())
    return jax.jit(program, in_shardings=(replicated,) * 4, compiler_options=_compiler_options(shape, mesh))


#: XLA options of the chunk program on CPU, for each cell drawing its own prompts: 512-bit vectors where the CPU has
#: them (XLA prefers 256 by default; a CPU without AVX-512 is unaffected). `python benchmarks/engine_settings.py`,
#: sweep-A's chunk program on this 2-core AVX-512 machine, two rounds of medians of 7: pseudo-Newton 0.488 / 0.500 s
#: against 0.539 / 0.520 s, gd 0.499 / 0.458 against 0.512 / 0.517 s; with common random numbers forcing it measured
#: 0.138 / 0.133 against 0.130 / 0.137 s (no gain), so that program keeps XLA's default.
_INDEPENDENT_CPU_OPTIONS = {"xla_cpu_prefer_vector_width": 512}

#: ... and XLA's legacy loop-fusion emitters instead of its newer MLIR fusion emitters (:mod:`ttscale._xla`): the
#: same numbers, faster. `python benchmarks/sampler_variants.py --rounds 5 --variants "engine,new emitters"`
#: (2026-12-02, a 2-core AMD EPYC VM, alternating in one process): sweep-A's program 0.363-0.384 s against
#: 0.418-0.506 s, every round; one process per setting (`benchmarks/engine_settings.py`) is noisier, see
#: benchmarks/RESULTS.md. With common random numbers they measured slower (`... --crn --variants "engine,legacy
#: emitters"`: 0.112-0.116 s against 0.095-0.105 s), so that program keeps XLA's default.
_LEGACY_EMITTERS = _xla.LEGACY_EMITTERS
_LEGACY_EMITTERS_JAXLIB = _xla.LEGACY_EMITTERS_JAXLIB


def _legacy_emitters_known() -> bool:
    return _xla.legacy_emitters_known(_LEGACY_EMITTERS_JAXLIB)


def _compiler_options(shape: "_Shape", mesh) -> Optional[dict]:
    if shape.crn or any(d.platform != "cpu" for d in mesh.devices.flat):
        return None
    options = dict(_INDEPENDENT_CPU_OPTIONS)
    if _legacy_emitters_known():
        options.update(_LEGACY_EMITTERS)
    return options


@functools.partial(jax.jit, static_argnames=("S", "N", "crn"))
def _cell_key_data(seed, m_index, *, S: int, N: int, crn: bool):
    base = jax.random.fold_in(jax.random.key(seed), m_index)
    if crn:
        return jax.random.key_data(base)
    per_s = jax.vmap(lambda s: jax.vmap(lambda n: jax.random.fold_in(jax.random.fold_in(base, s), n))(jnp.arange(N)))
    return jax.random.key_data(per_s(jnp.arange(S))).reshape(S * N, -1)


def cell_keys(spec: SweepSpec, m_index: int) -> np.ndarray:
    """Raw key data of test length ``m_index``: ``[2]`` with common random numbers, else ``[S·N, 2]``.

    ``fold_in(key(seed), i_m)`` (common random numbers) or
    ``fold_in(fold_in(fold_in(key(seed), i_m), s), i_n)`` for cell ``c = s·N + i_n``.
    """
    static = {"S": spec.n_spectra, "N": len(spec.ns), "crn": spec.common_random_numbers}
    return np.asarray(_run_program("sweep.cell_key_data", _cell_key_data, (np.uint32(spec.seed), np.uint32(m_index)), static))


class _Engine:
    """Per-spec state of a sweep: the per-cell traced inputs and the compiled chunk programs."""

    def __init__(self, spec: SweepSpec, params=None):
        self.spec = spec
        model = spec.model_object
        params = cell_parameters(spec) if params is None else params
        self.hints = tuple(sorted((model.hints(params) if model.hints is not None else {}).items()))
        S, N = spec.n_spectra, len(spec.ns)
        dtype = np.dtype(spec.dtype)
        flat = lambda x: np.ascontiguousarray(np.reshape(x, (S * N,) + np.shape(x)[2:]), dtype)  # noqa: E731
        with _x64():
            roots = np.asarray(_run_program("sweep.roots", _roots, (spec.test_covariances(jnp.float64),)))
        self.cells = {
            "params": jax.tree_util.tree_map(flat, params),
            "root": flat(np.broadcast_to(roots[:, None], (S, N) + roots.shape[1:])),
            "noise": np.full((S * N,), spec.noise, dtype),
        }
        self.n_devices = _device_count()
        self._keys = {}

    def keys(self, m_index: int) -> np.ndarray:
        if m_index not in self._keys:
            self._keys[m_index] = cell_keys(self.spec, m_index)
        return self._keys[m_index]

    def padded(self, count: int) -> int:
        """``count`` rounded up to a multiple of ``devices × _PROMPT_BLOCK`` (every block is a full one)."""
        unit = self.n_devices * _PROMPT_BLOCK
        return -(-count // unit) * unit

    def program_name(self, m_index: int, batch: int) -> Optional[str]:
        """A stable name of the chunk program (:mod:`ttscale.aot`): its :class:`_Shape`, the model's function by name."""
        shape = self.shape(m_index, batch)
        errors = aot.stable_name(shape.errors)
        if errors is None:
            return None
        fields = {f.name: getattr(shape, f.name) for f in dataclasses.fields(shape)}
        fields["errors"] = errors
        return f"sweep.chunk{sorted(fields.items())!r}"

    def program(self, m_index: int, batch: int):
        return _chunk_program(self.shape(m_index, batch))

    def load(self, m_index: int, batch: int) -> None:
        """Load (or compile and keep) the chunk program of ``(m_index, batch)`` now, as :meth:`chunk` would (:mod:`ttscale.aot`)."""
        name = self.program_name(m_index, batch)
        if name is not None and _keeps_programs():
            aot.compiled(name, self.program(m_index, batch), self._chunk_args(m_index, 0, batch))

    def _chunk_args(self, m_index: int, start: int, valid: int) -> tuple:
        """The chunk program's arguments: cell keys, per-cell inputs, first prompt, real prompts."""
        return (self.keys(m_index), self.cells, np.uint32(start), np.int32(valid))

    def shape(self, m_index: int, batch: int) -> "_Shape":
        spec = self.spec
        m = spec.ms[m_index]
        m = None if math.isinf(m) else int(m)
        cells = spec.n_spectra * len(spec.ns)
        model = spec.model_object
        bartlett = spec.draws_statistics(spec.ms[m_index])
        group = _cell_group(spec.d, m, spec.k_max, batch // self.n_devices, cells, spec.common_random_numbers, spec.dtype,
                            model.groups, bartlett)
        return _Shape(
            d=spec.d, m=m, k_max=spec.k_max, batch=batch, cells=cells, cell_group=group,
            crn=spec.common_random_numbers, noisy=spec.noise > 0, dtype=spec.dtype, n_devices=self.n_devices,
            errors=model.errors, reads=model.reads, groups=model.groups, hints=self.hints, bartlett=bartlett,
        )

    def chunk(self, m_index: int, start: int, stop: int, batch: Optional[int] = None):
        """Prompts ``start..stop−1``: errors ``[cells, k_max + 1, stop − start]`` and their :class:`~ttscale.summary.Moments`."""
        from ttscale import summary

        valid = stop - start
        batch = self.padded(valid) if batch is None else batch
        program = self.program(m_index, batch)
        errs, scale, mean, m2 = _run_program(self.program_name(m_index, batch), program,
                                             self._chunk_args(m_index, start, valid))
        errs = _fetch(errs)  # [C, K1, batch]
        scale, mean, m2 = (_fetch(x).astype(np.float64) for x in (scale, mean, m2))  # [devices, C, K1]
        local = batch // self.n_devices
        counts = np.clip(valid - local * np.arange(self.n_devices), 0, local)
        moments = None
        for dev in np.flatnonzero(counts):
            with np.errstate(invalid="ignore", over="ignore"):  # inf rows: inf · inf stays inf
                part = summary.Moments(int(counts[dev]), scale[dev] * mean[dev], scale[dev] ** 2 * m2[dev])
            moments = part if moments is None else summary.combine(moments, part)
        return errs[:, :, :valid], moments


def prompt_errors(spec: SweepSpec, m_index: int = 0, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Per-prompt squared errors ``||ŵ_k − w||²`` ``[spectrum, n, stop − start, k_max + 1]`` of one test length.

    The very numbers :func:`run_sweep` summarises (prompts ``start..stop−1`` of
    ``spec.ms[m_index]``), e.g. for histograms of heavy tails.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    m_index = _checks.static_int("m_index", m_index, minimum=0)
    if m_index >= len(spec.ms):
        raise ValueError(f"m_index must be < len(spec.ms) = {len(spec.ms)}, got {m_index}")
    stop = spec.prompts if stop is None else _checks.static_int("stop", stop, minimum=1)
    start = _checks.static_int("start", start, minimum=0)
    if not start < stop <= 2**32:
        raise ValueError(f"need 0 <= start < stop <= 2^32, got start={start}, stop={stop}")
    with _precision(spec):
        engine = _Engine(spec)
        chunk = min(spec.chunk, spec.prompts)
        batch = engine.padded(chunk)  # the run_sweep program of this spec: no new compile
        parts = [engine.chunk(m_index, st, min(st + chunk, stop), batch)[0] for st in range(start, stop, chunk)]
        errs = np.concatenate(parts, axis=2)  # [C, K1, P]
        S, N, K1 = spec.n_spectra, len(spec.ns), spec.k_max + 1
        return np.ascontiguousarray(np.swapaxes(errs.reshape(S, N, K1, -1), -1, -2))


def _precision(spec: SweepSpec):
    return jax.enable_x64(True) if spec.dtype == "float64" else contextlib.nullcontext()


#: Host memory (bytes) for the per-prompt errors of one test length; beyond it they spill to disk
#: (``<out>.partial`` or a temporary directory) and the exact median is computed slab by slab.
HOST_MEMORY = 256 * 2**20


def _version() -> str:
    from ttscale import __version__

    return str(__version__)


def run_sweep(spec: SweepSpec, out=None, progress: bool = True):
    """Run a sweep and return an ``xarray.Dataset``; with ``out`` write it (``.nc``) and resume.

    Dataset: dims ``spectrum, n, m, k`` (``k = 0..k_max``); coords ``spectrum`` (index), on
    ``spectrum`` the training spectra's family parameters (:func:`spectrum_coords`: ``alpha`` always,
    ``H``, ``trace``, those of a registered family, ...), ``hardness``, ``spectrum_label`` and
    ``spectrum_family`` (strings), then ``n``, ``m`` (floats, ``inf`` allowed), ``k``;
    variables ``mean``, ``stderr``, ``median [spectrum, n, m, k]`` (Monte Carlo over
    ``spec.prompts`` prompts) and, for a model with a preconditioner (:func:`theory_on_grid`),
    ``limit_error``, ``scaling_law_error``, ``overthinking_term [spectrum, n, k]``, ``one_step_error
    [spectrum, n, m]``, ``best_k``, ``turns_up``, ``spectral_radius [spectrum, n]``; attrs ``spec``
    (``SweepSpec.to_json``), ``spec_identity``, ``model``, ``ttscale_version``, ``jax_version``,
    ``devices``.

    ``m = ∞`` is *simulated* with ``S_m = Σ`` exactly: ``mean`` estimates ``limit_error`` with a
    real standard error and ``median`` is the median over prompts (not a closed form).

    With ``out``: an existing finished file of the same spec is returned without compute; a
    different spec is refused (:class:`ttscale.store.SpecMismatchError`); finished chunks in
    ``<out>.partial`` are reused, so a killed run resumes where it stopped.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    from ttscale import store

    identity = spec.identity()
    if out is None:
        _preflight(spec, None)
        with _precision(spec):
            return _run(spec, None, progress, identity)
    out_path = store.check_writable(out)
    _preflight(spec, out_path)
    # one writer per out (store.lock): a second run on the same out is refused, not interleaved
    with store.lock(out_path) if jax.process_index() == 0 else contextlib.nullcontext():
        done = store.check_finished(out_path, identity)
        if done is not None:
            return done
        with _precision(spec):
            return _run(spec, out_path, progress, identity)


def _preflight(spec: SweepSpec, out_path) -> None:
    """Refuse, before any compute, a sweep whose chunk cannot fit in memory or whose files cannot fit on disk.

    Memory of one chunk program ≈ the per-prompt errors of every cell (device and host copies) plus the
    base normals of the cells drawn together; disk = the chunk files of every ``m`` (with ``out``) plus
    the spill of one ``m``'s per-prompt errors beyond :data:`HOST_MEMORY`. Warns when the run needs more
    than 10⁵ compiled calls (a tiny ``chunk``).
    """
    import os
    import shutil
    import tempfile
    import warnings

    S, N, M, K1, d = spec.n_spectra, len(spec.ns), len(spec.ms), spec.k_max + 1, spec.d
    C, item = S * N, np.dtype(spec.dtype).itemsize
    chunk = min(spec.chunk, spec.prompts)
    batch = -(-chunk // (_device_count() * _PROMPT_BLOCK)) * _device_count() * _PROMPT_BLOCK
    m = max((int(x) for x in spec.ms if math.isfinite(x)), default=0)
    drawn_together = 1 if spec.common_random_numbers else min(C, _INDEPENDENT_GROUP)
    drawn = max(_drawn_per_prompt(d, None if math.isinf(x) else int(x), spec.draws_statistics(x)) for x in spec.ms)
    need = (2 * C * K1 + drawn_together * drawn) * batch * item
    _checks.check_fits(
        need, f"chunk: one chunk of {chunk} prompts ({C} cells × k = 0..{spec.k_max}"
        f"{f', prompts of length m = {m}, d = {d}' if m else ''})",
        "lower chunk (the results do not depend on it)" if chunk > 1 else "lower m, d or the grid")
    gib = lambda b: f"{b / 2**30:.3g} GiB"  # noqa: E731
    per_m = C * K1 * spec.prompts * item
    disk = (M * per_m if out_path is not None else 0) + (per_m if per_m > HOST_MEMORY else 0)
    if disk:
        where = os.path.dirname(out_path) if out_path is not None else tempfile.gettempdir()
        free = shutil.disk_usage(where).free
        if disk > free:
            raise ValueError(
                f"prompts: this sweep writes ≈ {gib(disk)} of per-prompt errors ({C} cells × {K1} k × "
                f"{spec.prompts} prompts × {M} m × {item} B, for resumption and the exact median) but {where} has "
                f"{gib(free)} free; use fewer prompts or a smaller grid, or another out"
            )
    calls = M * -(-spec.prompts // chunk)
    if calls > 100_000:
        warnings.warn(f"chunk: {calls} compiled calls of {chunk} prompts each; a larger chunk is much faster",
                      RuntimeWarning, stacklevel=3)


def _run(spec: SweepSpec, out_path, progress: bool, identity: str):
    from ttscale import _background, store, summary

    # the Dataset (and the netCDF file) are made last: their imports overlap the compiled programs' loading and running
    _background.import_modules("xarray", *(("netCDF4", "xarray.backends.netCDF4_") if out_path is not None else ()))

    writer = jax.process_index() == 0
    # Every process reads the finished chunks (``out`` must be on a filesystem all hosts see);
    # only process 0 writes.
    partial = store.PartialStore(out_path, identity) if out_path is not None else None
    finished = partial.finished() if partial is not None else set()

    S, N, M, K1 = spec.n_spectra, len(spec.ns), len(spec.ms), spec.k_max + 1
    C = S * N
    params = cell_parameters(spec)
    engine = _Engine(spec, params)
    chunk = min(spec.chunk, spec.prompts)
    starts = range(0, spec.prompts, chunk)
    if _keeps_programs() and spec.model_object.preconditioner is not None:
        # Loaded programs run without tracing, so nothing sets LAPACK up before the loaded closed forms need it:
        # do it (scipy's import, ~0.15 s of Python) in a thread while this one loads the chunk programs (C++).
        aot.set_up_lapack(background=True)
        for mi in range(len(spec.ms)):
            if any((mi, st, min(st + chunk, spec.prompts)) not in finished for st in starts):
                engine.load(mi, engine.padded(chunk))
    forms = theory_on_grid(spec, params)
    np_dtype = np.dtype(spec.dtype)

    total = M * C * spec.prompts
    already = sum(C * (stop - st) for mi, st, stop in finished
                  if mi < M and st % chunk == 0 and stop == min(st + chunk, spec.prompts))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # one tick per chunk: the count is cell·prompts (rate: prompts/s summed over cells), the postfix the cells done
        bar = tqdm(total=total, initial=already, unit="prompt", unit_scale=True, desc=f"sweep {M * C} cells", smoothing=0.1,
                   mininterval=0.5)

        def cells_done():
            done = bar.n / spec.prompts
            return f"{done:.0f}/{M * C}" if abs(done - round(done)) < 1e-9 else f"{done:.1f}/{M * C}"

    mean = np.empty((S, N, M, K1), np_dtype)
    stderr = np.empty_like(mean)
    median = np.empty_like(mean)
    spill_dir = partial.directory if partial is not None and writer else None
    try:
        for mi, m in enumerate(spec.ms):
            moments = None
            with summary.PromptErrors(C * K1, spec.prompts, np_dtype, budget_bytes=HOST_MEMORY,
                                      directory=spill_dir) as per_prompt:
                for st in starts:
                    stop = min(st + chunk, spec.prompts)
                    loaded = None
                    if (mi, st, stop) in finished:
                        try:
                            loaded = partial.load(mi, st, stop)
                        except store.CorruptChunkError as exc:  # truncated, altered or pre-checksum: recompute it
                            import warnings

                            warnings.warn(f"{exc}; recomputing that chunk", RuntimeWarning, stacklevel=2)
                            if writer:
                                partial.discard(mi, st, stop)
                    if loaded is not None:
                        errs, part = loaded
                    else:
                        errs, part = engine.chunk(mi, st, stop, batch=engine.padded(chunk))
                        if partial is not None and writer:
                            partial.save(mi, st, stop, errs, part)
                        if bar is not None:
                            bar.update(C * (stop - st))
                            bar.set_postfix_str(f"cells {cells_done()}, m = {m:g}")
                    moments = part if moments is None else summary.combine(moments, part)
                    per_prompt.put(st, stop, errs.reshape(C * K1, stop - st))
                med = per_prompt.median()
            mu, se = summary.finish(moments)
            mean[:, :, mi] = mu.reshape(S, N, K1)
            stderr[:, :, mi] = se.reshape(S, N, K1)
            median[:, :, mi] = med.reshape(S, N, K1)
            if bar is not None:
                bar.set_postfix_str(f"cells {cells_done()}, m = {m:g}")
    except KeyboardInterrupt:
        chunks = M * len(starts)
        kept = len(partial.finished()) if partial is not None else 0
        where = (f"{kept} of {chunks} chunks are saved in {partial.directory}" if partial is not None
                 else "nothing was saved (no out)")
        raise KeyboardInterrupt(f"stopped in test length m = {spec.ms[mi]:g} (index {mi}); {where}") from None
    finally:
        if bar is not None:
            bar.close()

    import xarray as xr

    dims = {"limit_error": ("spectrum", "n", "k"), "one_step_error": ("spectrum", "n", "m"),
            "scaling_law_error": ("spectrum", "n", "k"), "overthinking_term": ("spectrum", "n", "k"),
            "best_k": ("spectrum", "n"), "turns_up": ("spectrum", "n"), "spectral_radius": ("spectrum", "n")}
    data_vars = {name: (("spectrum", "n", "m", "k"), value)
                 for name, value in (("mean", mean), ("stderr", stderr), ("median", median))}
    for name, dim in (dims.items() if forms is not None else ()):
        value = forms[name]
        data_vars[name] = (dim, value.astype(np_dtype) if value.dtype.kind == "f" else value)
    ds = xr.Dataset(
        data_vars=data_vars,
        coords={
            "spectrum": np.arange(S),
            **spectrum_coords(spec),
            "n": np.asarray(spec.ns, np.float64),
            "m": np.asarray(spec.ms, np.float64),
            "k": np.arange(K1),
        },
        attrs={
            "spec": spec.to_json(),
            "spec_identity": identity,
            "model": spec.model_object.name,
            "ttscale_version": _version(),
            "jax_version": jax.__version__,
            "devices": json.dumps([str(dev) for dev in jax.devices()]),
        },
    )
    _describe(ds)
    if partial is not None and writer:
        store.write_dataset(ds, out_path)
        partial.remove()
    return ds


_DESCRIPTIONS = {
    "mean": "Monte-Carlo mean over prompts of ||w_k - w||^2",
    "stderr": "standard error of the mean (inf if any prompt diverged)",
    "median": "median over prompts of ||w_k - w||^2",
    "limit_error": "m -> inf closed form ||(I - P Sigma)^k||_F^2",
    "one_step_error": "exact finite-m error at k = 1",
    "scaling_law_error": "Corollary 3.5: d (1 + n/(1 + Hard))^(-2k)",
    "overthinking_term": "Remark 4.1: tr(M^(2k)), M = I - Gamma^(-1/2) Sigma Gamma^(-1/2), Gamma = sym(P)^-1",
    "best_k": "argmin over k = 1..k_max of limit_error",
    "turns_up": "the m -> inf error rises again after best_k within k <= k_max (ttscale.theory.best_k)",
    "spectral_radius": "max |eig(I - P Sigma)| (> 1: the m -> inf error eventually diverges)",
}


def spectrum_coords(spec: SweepSpec) -> dict:
    """Coordinates on ``spectrum`` of a spec's training spectra (:class:`~ttscale.families.SpectrumGrid`).

    ``alpha`` (always: ``nan`` where a spectrum has no power-law exponent), every other family
    parameter or derived coordinate present (``H``, ``trace``, a registered family's parameters;
    float64, ``nan`` where a spectrum's family lacks it), ``hardness`` ``= tr Λ / λ_min`` (float64),
    ``spectrum_label`` (canonical text, e.g. ``power_law:alpha=0.5``) and ``spectrum_family``.
    """
    grid = spec.spectra
    S = len(grid)
    out = {"alpha": ("spectrum", np.asarray(grid.coords.get("alpha", np.full(S, np.nan)), np.float64))}
    for name, values in grid.coords.items():
        out.setdefault(name, ("spectrum", np.asarray(values, np.float64)))
    with _x64():
        hardness = np.asarray(_run_program("sweep.hardness", _hardness, (grid.stacked(np.float64),)), np.float64)
    out["hardness"] = ("spectrum", hardness)
    out["spectrum_label"] = ("spectrum", np.asarray(grid.labels, dtype=str))
    out["spectrum_family"] = ("spectrum", np.asarray(grid.family, dtype=str))
    return out


def _describe(ds) -> None:
    for name, text in _DESCRIPTIONS.items():
        if name in ds:
            ds[name].attrs["long_name"] = text
    ds["alpha"].attrs["long_name"] = "power-law exponent of the training spectrum (nan where it has none)"
    ds["hardness"].attrs["long_name"] = "Hard(Lambda) = tr(Lambda) / lambda_min(Lambda) of the training spectrum"
    ds["spectrum_label"].attrs["long_name"] = "the training spectrum in the spectrum syntax of ttscale.families"
    ds["spectrum_family"].attrs["long_name"] = "the family of the training spectrum"
    for name, text in (("H", "target hardness Hard(Lambda) of the hard family"),
                       ("trace", "tr(Lambda) of the power-law / hard family")):
        if name in ds.coords:
            ds[name].attrs["long_name"] = text
