"""Vectorised NumPy baselines for the canonical workloads (timed beside ttscale in the same run).

Everything here is plain NumPy (float32 unless told otherwise), vectorised over prompts with
no Python loop over prompts; the only Python loops are over cells (spectrum × n), CoT steps
and prompt chunks — which is what a careful NumPy programmer would write.

Math (docs/science.md §2, §4): prompts ``x_j = Λ^{1/2} z_j``, ``w ~ N(0, I_d)``, ``y = Xᵀ w`` (noiseless);
``S_m = X Xᵀ / m``; the learned preconditioner ``P = Γ(Λ, n)⁻¹``,
``Γ = (1 + 1/n) Λ + (tr Λ / n) I``. Pseudo-Newton on the error ``e = ŵ − w``:
``e_0 = −w``, ``e_{k+1} = (I − P S_m) e_k``. The literal LSA forward:
``E_0 = embed(X, y, 0)``, ``f(E) = E + V E (Eᵀ W E) / ρ`` (``ρ = m``), read ``ŵ`` from the
last column, append ``[0; 0; ŵ; 1]``, repeat.

Sampling schemes:

* ``"independent"``: every cell (spectrum, n) draws fresh normals ``Z [b, d, m]``, ``w [b, d]``;
* ``"crn"`` (common random numbers): one draw of ``(Z, w)`` is shared by every cell, each
  spectrum transforming it by its own ``Λ^{1/2}``; ``S_m`` is then shared across ``n``.

All functions return per-cell summaries ``mean, stderr, median [S, N, k_max + 1]`` (the
error at ``k = 0`` is ``||w||²``); divergent prompts give ``inf``, never an exception.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np


# ----------------------------------------------------------------------------- spectra, Γ
def power_law_eigenvalues(d: int, alphas, trace: float | None = None, dtype=np.float32) -> np.ndarray:
    """``λ_i = t · i^{-α} / Σ_j j^{-α}`` for each ``α`` → ``[S, d]`` (``t = d`` by default)."""
    alphas = np.atleast_1d(np.asarray(alphas, np.float64))
    i = np.arange(1, d + 1, dtype=np.float64)
    raw = i[None, :] ** (-alphas[:, None])
    t = float(d if trace is None else trace)
    return (t * raw / raw.sum(axis=1, keepdims=True)).astype(dtype)


def gamma_inverse_diagonal(eigenvalues: np.ndarray, n: float) -> np.ndarray:
    """Diagonal of ``Γ(Λ, n)⁻¹`` for diagonal ``Λ = diag(λ)``: ``1 / ((1 + 1/n) λ + tr Λ / n)`` → ``[..., d]``."""
    lam = np.asarray(eigenvalues)
    return (1.0 / ((1.0 + 1.0 / n) * lam + lam.sum(axis=-1, keepdims=True) / n)).astype(lam.dtype)


# ----------------------------------------------------------------------------- statistics
class Summary(NamedTuple):
    """Per-cell Monte-Carlo summaries ``[..., k_max + 1]``."""

    mean: np.ndarray
    stderr: np.ndarray
    median: np.ndarray


def summarise(sq_errors: np.ndarray) -> Summary:
    """Mean, standard error (ddof 1) and median over axis 0 of ``[batch, K]``; ``nan`` → ``inf``."""
    errs = np.where(np.isnan(sq_errors), np.inf, sq_errors).astype(np.float64)
    b = errs.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        mean = errs.mean(axis=0)
        finite = np.all(np.isfinite(errs), axis=0)
        var = np.where(finite, errs.var(axis=0, ddof=1), np.inf)
        stderr = np.sqrt(var / b)
    return Summary(mean, stderr, np.median(errs, axis=0))


# ----------------------------------------------------------------------------- pseudo-Newton
def pseudo_newton_errors(P: np.ndarray, X: np.ndarray, w: np.ndarray, k_max: int) -> np.ndarray:
    """Squared errors ``||ŵ_k − w||² [b, k_max + 1]`` of the noiseless pseudo-Newton rollout.

    ``P [d, d]`` (or ``[b, d, d]``), ``X [b, d, m]``, ``w [b, d]``.
    ``B = I − P S_m`` once per prompt, then ``e ← B e`` ``k_max`` times (``e_0 = −w``).
    """
    b, d, m = X.shape
    S = np.matmul(X, X.transpose(0, 2, 1)) / np.float32(m)
    B = np.eye(d, dtype=X.dtype) - np.matmul(P, S)
    return _iterate(B, -w, k_max)


def _iterate(B: np.ndarray, e0: np.ndarray, k_max: int) -> np.ndarray:
    """``e_{k+1} = B e_k`` for a batch ``B [..., d, d]``, ``e0 [..., d]`` → ``||e_k||² [..., k_max + 1]``."""
    out = np.empty(e0.shape[:-1] + (k_max + 1,), np.float32)
    e = e0
    with np.errstate(over="ignore", invalid="ignore"):
        out[..., 0] = np.einsum("...i,...i->...", e, e)
        for k in range(1, k_max + 1):
            e = np.einsum("...ij,...j->...i", B, e)
            out[..., k] = np.einsum("...i,...i->...", e, e)
    return np.where(np.isnan(out), np.inf, out)


def pseudo_newton_errors_diagonal(sqrt_lam: np.ndarray, p_diag: np.ndarray, Z: np.ndarray, w: np.ndarray,
                                  k_max: int, S_Z: np.ndarray | None = None) -> np.ndarray:
    """Same as :func:`pseudo_newton_errors` for diagonal ``Λ`` and ``P`` (the sweep-A case).

    ``X = Λ^{1/2} Z`` so ``S_m = D S_Z D`` with ``D = Λ^{1/2}``, ``S_Z = Z Zᵀ / m``; ``P S_m``
    is a row/column scaling of ``S_Z``. ``sqrt_lam [d]``, ``p_diag [d]`` or ``[N, d]`` (several
    ``n`` at once → leading axis ``N`` on the output), ``Z [b, d, m]``, ``w [b, d]``.
    Pass ``S_Z`` to reuse it across calls (common random numbers).
    """
    b, d, m = Z.shape
    if S_Z is None:
        S_Z = np.matmul(Z, Z.transpose(0, 2, 1)) / np.float32(m)
    S = S_Z * (sqrt_lam[:, None] * sqrt_lam[None, :])  # [b, d, d]
    p = np.asarray(p_diag)
    eye = np.eye(d, dtype=Z.dtype)
    if p.ndim == 1:
        B = eye - p[:, None] * S
        return _iterate(B, -w, k_max)
    B = eye - p[:, None, :, None] * S[None]  # [N, b, d, d]
    return _iterate(B, np.broadcast_to(-w, (p.shape[0],) + w.shape), k_max)


# ----------------------------------------------------------------------------- literal LSA
def lsa_optimal_params(p_matrix: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(W, V)`` with ``W[x, ŵ] = c I``, ``W[y, 1] = −c``, ``V[ŵ, x] = −P / c`` (``[D, D]``, ``D = 2d + 2``)."""
    d = p_matrix.shape[-1]
    D = 2 * d + 2
    W = np.zeros((D, D), p_matrix.dtype)
    V = np.zeros((D, D), p_matrix.dtype)
    W[0:d, d + 1:2 * d + 1] = c * np.eye(d)
    W[d, 2 * d + 1] = -c
    V[d + 1:2 * d + 1, 0:d] = -p_matrix / c
    return W, V


def lsa_embed(X: np.ndarray, y: np.ndarray, extra_columns: int = 0) -> np.ndarray:
    """``E [b, D, m + 1 + extra]``: data columns ``[x; y; 0; 0]``, query ``[0; 0; 0; 1]``, then zeros."""
    b, d, m = X.shape
    D = 2 * d + 2
    E = np.zeros((b, D, m + 1 + extra_columns), X.dtype)
    E[:, :d, :m] = X
    E[:, d, :m] = y
    E[:, 2 * d + 1, m] = 1.0
    return E


def lsa_literal_errors(W: np.ndarray, V: np.ndarray, X: np.ndarray, w: np.ndarray, k_max: int,
                       rho: float | None = None) -> np.ndarray:
    """Literal LSA CoT, vectorised over prompts → ``||ŵ_k − w||² [b, k_max + 1]``.

    Step ``i``: ``F = E + V E (Eᵀ W E) / ρ`` on the current ``E [b, D, m + 1 + i]`` (the whole
    layer, every column, as the model computes it); ``ŵ`` is the ``ŵ`` block of the last column
    of ``F``; the column ``[0; 0; ŵ; 1]`` is appended. ``ρ = m`` (appended columns not counted).
    """
    b, d, m = X.shape
    rho = np.float32(m if rho is None else rho)
    y = np.einsum("bdm,bd->bm", X, w)
    E_buf = lsa_embed(X, y, extra_columns=k_max)
    out = np.empty((b, k_max + 1), np.float32)
    out[:, 0] = np.einsum("bi,bi->b", w, w)
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(k_max):
            E = E_buf[:, :, : m + 1 + i]
            scores = np.matmul(E.transpose(0, 2, 1), np.matmul(W, E))  # Eᵀ W E   [b, N, N]
            F = E + np.matmul(np.matmul(V, E), scores) / rho  # [b, D, N]
            w_hat = F[:, d + 1:2 * d + 1, -1]
            E_buf[:, d + 1:2 * d + 1, m + 1 + i] = w_hat
            E_buf[:, 2 * d + 1, m + 1 + i] = 1.0
            diff = w_hat - w
            out[:, i + 1] = np.einsum("bi,bi->b", diff, diff)
    return np.where(np.isnan(out), np.inf, out)


# ----------------------------------------------------------------------------- sweep drivers
class SweepResult(NamedTuple):
    """``summary`` over cells ``[S, N, k_max + 1]`` and the seconds spent drawing normals."""

    summary: Summary
    rng_seconds: float


def _normals(rng: np.random.Generator, batch: int, d: int, m: int):
    Z = rng.standard_normal((batch, d, m), dtype=np.float32)
    w = rng.standard_normal((batch, d), dtype=np.float32)
    return Z, w


def sweep_numpy(d: int, alphas, ns, m: int, k_max: int, prompts: int, scheme: str = "independent",
                model: str = "pseudo_newton", seed: int = 0, chunk: int | None = None) -> SweepResult:
    """The sweep-A workload in NumPy: Σ = Λ = power law (tr = d), ``P = Γ(Λ, n)⁻¹``, every cell.

    ``scheme``: ``"independent"`` (fresh normals per cell) or ``"crn"`` (one draw shared by all
    cells). ``model``: ``"pseudo_newton"`` (minimal update) or ``"lsa"`` (literal forward).
    ``chunk`` bounds the prompts held in memory at once (default: all).
    Returns per-cell ``Summary [S, N, k_max + 1]`` and the time spent in the RNG.
    """
    if scheme not in ("independent", "crn"):
        raise ValueError(f"scheme must be 'independent' or 'crn', got {scheme!r}")
    if model not in ("pseudo_newton", "lsa"):
        raise ValueError(f"model must be 'pseudo_newton' or 'lsa', got {model!r}")
    lam = power_law_eigenvalues(d, alphas)  # [S, d]
    sqrt_lam = np.sqrt(lam)
    ns = [float(n) for n in ns]
    S_count, N_count = lam.shape[0], len(ns)
    chunk = prompts if chunk is None else min(int(chunk), prompts)
    rng = np.random.default_rng(seed)
    rng_seconds = 0.0
    errs = np.empty((S_count, N_count, prompts, k_max + 1), np.float32)
    for start in range(0, prompts, chunk):
        b = min(chunk, prompts - start)
        sl = slice(start, start + b)
        if scheme == "crn":
            t0 = time.perf_counter()
            Z, w = _normals(rng, b, d, m)
            rng_seconds += time.perf_counter() - t0
            S_Z = np.matmul(Z, Z.transpose(0, 2, 1)) / np.float32(m) if model == "pseudo_newton" else None
        for s in range(S_count):
            if model == "pseudo_newton" and scheme == "crn":
                p = np.stack([gamma_inverse_diagonal(lam[s], n) for n in ns])  # [N, d]
                errs[s, :, sl] = pseudo_newton_errors_diagonal(sqrt_lam[s], p, Z, w, k_max, S_Z=S_Z)
                continue
            for j, n in enumerate(ns):
                if scheme == "independent":
                    t0 = time.perf_counter()
                    Z, w = _normals(rng, b, d, m)
                    rng_seconds += time.perf_counter() - t0
                p = gamma_inverse_diagonal(lam[s], n)
                if model == "pseudo_newton":
                    errs[s, j, sl] = pseudo_newton_errors_diagonal(sqrt_lam[s], p, Z, w, k_max)
                else:
                    X = sqrt_lam[s][None, :, None] * Z
                    W, V = lsa_optimal_params(np.diag(p))
                    errs[s, j, sl] = lsa_literal_errors(W, V, X, w, k_max)
    summ = [[summarise(errs[s, j]) for j in range(N_count)] for s in range(S_count)]
    summary = Summary(*(np.array([[getattr(c, f) for c in row] for row in summ]) for f in Summary._fields))
    return SweepResult(summary, rng_seconds)


# ----------------------------------------------------------------------------- strong baseline
# What a careful NumPy user writes for sweep-A: float32 throughout, the faster of two normal
# generators, blocks of prompts that stay in cache, B = I − P S formed once per prompt and
# iterated as batched matmuls, cells spread over threads (NumPy releases the GIL inside BLAS, the
# generators and ufuncs), OpenBLAS itself single-threaded meanwhile.

NORMAL_METHODS = ("box_muller", "generator")
SAMPLERS = ("prompts", "wishart")


def _openblas():
    """The ``ctypes`` handle of the OpenBLAS NumPy loaded and its symbol suffix, or ``(None, "")``."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None, ""
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            if hasattr(lib, f"{prefix}_set_num_threads{suffix}") and hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                return lib, (prefix, suffix)
    return None, ""


def blas_threads(n: int | None = None) -> int | None:
    """OpenBLAS's thread count (``None`` if NumPy's BLAS is not a findable OpenBLAS); with ``n``, set it first.

    Returns the count before the change, so ``old = blas_threads(1); ...; blas_threads(old)`` restores it.
    (Leaves ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` alone.)
    """
    lib, names = _openblas()
    if lib is None:
        return None
    prefix, suffix = names
    old = int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())
    if n is not None:
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(int(n))
    return old


def box_muller(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    """Standard normals by Box–Muller from ``rng.random(dtype=float32)``: ``r = √(−2 log(1 − u))``, ``θ = 2π v``.

    Both ``r cos θ`` and ``r sin θ`` are used (two normals per pair of uniforms); ``1 − u ∈ (0, 1]``
    keeps the log finite. → ``shape`` array of ``dtype``.
    """
    shape = tuple(np.atleast_1d(shape).tolist()) if not isinstance(shape, tuple) else shape
    size = int(np.prod(shape))
    half = (size + 1) // 2
    u = rng.random(2 * half, dtype=np.float32)
    r = np.log1p(-u[:half])
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    theta = u[half:]
    theta *= np.float32(2.0 * np.pi)
    out = np.empty(2 * half, np.float32)
    np.cos(theta, out=out[:half])
    np.sin(theta, out=out[half:])
    out[:half] *= r
    out[half:] *= r
    return out[:size].reshape(shape).astype(dtype, copy=False)


def normals(rng: np.random.Generator, shape, method: str = "box_muller") -> np.ndarray:
    """float32 standard normals: ``"box_muller"`` (:func:`box_muller`) or ``"generator"`` (``rng.standard_normal``)."""
    if method == "box_muller":
        return box_muller(rng, shape)
    if method == "generator":
        return rng.standard_normal(shape, dtype=np.float32)
    raise ValueError(f"method must be one of {NORMAL_METHODS}, got {method!r}")


def time_normal_methods(size: int = 2**22, repeats: int = 3, bit_generator=np.random.SFC64) -> dict:
    """Median seconds per ``size`` float32 normals of each method → ``{"box_muller": s, "generator": s, "fastest": name}``."""
    out = {}
    for method in NORMAL_METHODS:
        rng = np.random.Generator(bit_generator(0))
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            normals(rng, (size,), method)
            times.append(time.perf_counter() - t0)
        out[method] = float(np.median(times))
    out["fastest"] = min(NORMAL_METHODS, key=lambda k: out[k])
    return out


def wishart_whitened(rng: np.random.Generator, batch: int, d: int, m: int, method: str = "box_muller") -> np.ndarray:
    """``S_Z = Z Zᵀ / m`` drawn directly (Bartlett): ``Z Zᵀ = L Lᵀ`` → ``[batch, d, d]`` float32; needs ``m ≥ d``.

    ``L`` lower-triangular with ``L_ii² ~ χ²_{m−i+1}`` (``i = 1..d``; ``χ²_k = 2 Gamma(k/2)``) and
    ``L_ij ~ N(0, 1)`` below the diagonal: ``d(d−1)/2`` normals and ``d`` chi-squares per prompt
    instead of ``d m``.
    """
    if m < d:
        raise ValueError(f"m must be >= d = {d} for the Bartlett decomposition, got {m}")
    L = np.zeros((batch, d, d), np.float32)
    rows, cols = np.tril_indices(d, -1)
    L[:, rows, cols] = normals(rng, (batch, rows.size), method)
    dof = np.float32(m) - np.arange(d, dtype=np.float32)  # m, m − 1, ..., m − d + 1
    diag = rng.standard_gamma(np.broadcast_to(dof / np.float32(2), (batch, d)), dtype=np.float32)
    idx = np.arange(d)
    L[:, idx, idx] = np.sqrt(np.float32(2) * diag)
    S = np.matmul(L, L.transpose(0, 2, 1))
    S *= np.float32(1.0 / m)
    return S


def _block_errors_from_SZ(S_Z: np.ndarray, sqrt_lam: np.ndarray, p: np.ndarray, w: np.ndarray, k_max: int,
                          out: np.ndarray) -> None:
    """``out [b, k_max + 1] = ||e_k||²`` for ``e_{k+1} = B e_k``, ``B = I − P S``, ``S = D S_Z D``, ``e_0 = −w``.

    ``D = diag(sqrt_lam)``, ``P = diag(p)``: ``B_ij = δ_ij − p_i D_i (S_Z)_ij D_j``, formed once per prompt;
    the ``k_max`` steps are batched ``[b, d, d] @ [b, d, 1]`` matmuls on the (cache-resident) block.
    """
    d = S_Z.shape[-1]
    B = S_Z * (-(p * sqrt_lam))[:, None]
    B *= sqrt_lam
    B[:, np.arange(d), np.arange(d)] += np.float32(1)
    e = (-w)[:, :, None]
    out[:, 0] = np.einsum("bi,bi->b", w, w)
    for k in range(1, k_max + 1):
        e = np.matmul(B, e)
        out[:, k] = np.einsum("bij,bij->b", e, e)


def _whitened_block(rng, b: int, d: int, m: int, sampler: str, method: str):
    """``(S_Z [b, d, d], w [b, d])`` of ``b`` fresh prompts: from ``Z [b, d, m]`` or straight from the Wishart."""
    if sampler == "wishart":
        S_Z = wishart_whitened(rng, b, d, m, method)
    else:
        Z = normals(rng, (b, d, m), method)
        S_Z = np.matmul(Z, Z.transpose(0, 2, 1))
        S_Z *= np.float32(1.0 / m)
    return S_Z, normals(rng, (b, d), method)


def sweep_numpy_strong(d: int, alphas, ns, m: int, k_max: int, prompts: int, scheme: str = "independent",
                       sampler: str = "prompts", seed: int = 0, block: int = 256, threads: int = 2,
                       method: str = "box_muller") -> SweepResult:
    """Sweep-A (pseudo-Newton, noiseless, ``Σ = Λ`` power law with tr = d) as a careful NumPy user writes it.

    Per cell ``(α, n)``: ``P = Γ(Λ, n)⁻¹ = diag(1 / ((1 + 1/n) λ + tr Λ / n))``; per prompt
    ``S = Λ^{1/2} S_Z Λ^{1/2}`` with ``S_Z = Z Zᵀ / m``, ``e_0 = −w``, ``e_{k+1} = (I − P S) e_k``,
    errors ``||e_k||²`` (``= ||w_k − w||²`` of ``w_{k+1} = w_k + P(b − S w_k)``, ``b = S w``, ``w_0 = 0``).

    * ``scheme="independent"``: every cell draws its own prompts (its own ``Generator``, spawned from
      ``seed``); ``"crn"``: one draw of ``(S_Z, w)`` per prompt block, shared by every cell.
    * ``sampler="prompts"`` draws ``Z [b, d, m]``; ``"wishart"`` draws ``S_Z`` itself
      (:func:`wishart_whitened`, exact in law for this noiseless model; needs ``m ≥ d``).
    * ``method``: the normal generator (:data:`NORMAL_METHODS`; :func:`time_normal_methods` picks).
    * Prompts run in blocks of ``block``; cells over ``threads`` threads (OpenBLAS set to one thread
      meanwhile, restored after). float32 throughout; per-prompt errors of one cell are ``[prompts, k_max + 1]``.

    Returns per-cell ``Summary [S, N, k_max + 1]`` (mean, s.e. with ddof 1, median — the summary
    ttscale's sweep reports) and ``rng_seconds = nan`` (the draws run inside the threads).
    """
    from concurrent.futures import ThreadPoolExecutor

    if scheme not in ("independent", "crn"):
        raise ValueError(f"scheme must be 'independent' or 'crn', got {scheme!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if method not in NORMAL_METHODS:
        raise ValueError(f"method must be one of {NORMAL_METHODS}, got {method!r}")
    for name, value in (("d", d), ("m", m), ("k_max", k_max + 1), ("prompts", prompts), ("block", block),
                        ("threads", threads)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= {1 if name != 'k_max' else 0}, got {value}")
    lam = power_law_eigenvalues(d, alphas)  # [S, d]
    sqrt_lam = np.sqrt(lam)
    ns = [float(n) for n in ns]
    S_count, N_count = lam.shape[0], len(ns)
    cells = [(s, j) for s in range(S_count) for j in range(N_count)]
    starts = list(range(0, prompts, block))
    root = np.random.SeedSequence(seed)

    def gen(child):
        return np.random.Generator(np.random.SFC64(child))

    shared = None
    old_threads = blas_threads(1) if threads > 1 else None
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            if scheme == "crn":  # one (S_Z, w) per block, drawn in parallel, shared by every cell
                seeds = root.spawn(len(starts))
                shared = list(pool.map(lambda i: _whitened_block(gen(seeds[i]), min(block, prompts - starts[i]),
                                                                 d, m, sampler, method), range(len(starts))))
            cell_seeds = root.spawn(len(cells)) if scheme == "independent" else [None] * len(cells)

            def run_cell(c):
                s, j = cells[c]
                p = gamma_inverse_diagonal(lam[s], ns[j])
                errs = np.empty((prompts, k_max + 1), np.float32)
                rng = gen(cell_seeds[c]) if scheme == "independent" else None
                with np.errstate(over="ignore", invalid="ignore"):
                    for i, st in enumerate(starts):
                        b = min(block, prompts - st)
                        S_Z, w = shared[i] if shared is not None else _whitened_block(rng, b, d, m, sampler, method)
                        _block_errors_from_SZ(S_Z, sqrt_lam[s], p, w, k_max, errs[st:st + b])
                return summarise(errs)

            summ = list(pool.map(run_cell, range(len(cells))))
    finally:
        if old_threads is not None:
            blas_threads(old_threads)
    summary = Summary(*(np.stack([getattr(c, f) for c in summ]).reshape(S_count, N_count, k_max + 1)
                        for f in Summary._fields))
    return SweepResult(summary, float("nan"))


# ----------------------------------------------------------------------------- LSA training
def lsa_sgd_train(d: int, eigenvalues: np.ndarray, n: int, steps: int, batch: int, learning_rate: float,
                  c: float = 1.0, seed: int = 0, draw=None) -> tuple[np.ndarray, np.ndarray]:
    """SGD on ``V`` of the LSA with frozen paper ``W`` (scale ``c``), ``ŵ_0 = 0``, ``V_0 = 0`` (docs/science.md §3).

    Loss ``½ E ||f(E)[:, -1] − (0, 0, w, 1)||²``. With ``e_q = [0; 0; 0; 1]``,
    ``f(E)[:, -1] = e_q + V G u / ρ``, ``G = E Eᵀ``, ``u = W e_q``; the gradient is
    ``∇_V = mean_b r_b (G_b u)ᵀ / ρ`` with residual ``r_b = f(E_b)[:, -1] − t_b``. Only the data
    columns of ``G`` matter (the query column adds ``e_q e_qᵀ``, whose product with ``u`` is 0).
    ``draw(t) -> (X [batch, d, n], w [batch, d])`` overrides the sampler (tests feed the exact
    prompts ttscale's trainer sees). Returns ``(V [D, D], losses [steps])``.
    """
    D = 2 * d + 2
    rng = np.random.default_rng(seed)
    sqrt_lam = np.sqrt(np.asarray(eigenvalues, np.float32))
    u = np.zeros(D, np.float32)
    u[d] = -c  # W e_q: the column W[:, one] has −c in the y row
    V = np.zeros((D, D), np.float32)
    losses = np.empty(steps, np.float32)
    lr = np.float32(learning_rate)
    for t in range(steps):
        if draw is None:
            Z = rng.standard_normal((batch, d, n), dtype=np.float32)
            w = rng.standard_normal((batch, d), dtype=np.float32)
            X = sqrt_lam[None, :, None] * Z
        else:
            X, w = (np.asarray(a, np.float32) for a in draw(t))
        y = np.einsum("bdn,bd->bn", X, w)
        # G u = E Eᵀ u over the data columns = −c · [X y; y·y; 0; 0]
        Gu = np.zeros((batch, D), np.float32)
        Gu[:, :d] = -c * np.einsum("bdn,bn->bd", X, y)
        Gu[:, d] = -c * np.einsum("bn,bn->b", y, y)
        a = Gu / np.float32(n)  # [b, D]
        pred = a @ V.T  # V G u / ρ   [b, D]; the e_q part cancels against the target's 1
        target = np.zeros((batch, D), np.float32)
        target[:, d + 1:2 * d + 1] = w
        r = pred - target
        losses[t] = 0.5 * np.mean(np.sum(r * r, axis=1))
        V -= lr * (r.T @ a) / np.float32(batch)
    return V, losses


# ----------------------------------------------------------------------------- matmul peak
def matmul_peak_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Median float32 GFLOP/s of ``A @ B`` for ``[size, size]`` matrices (``2 size³`` flops)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size), dtype=np.float32)
    B = rng.standard_normal((size, size), dtype=np.float32)
    A @ B
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ B
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / float(np.median(times)) / 1e9


# ----------------------------------------------------------------------------- GPT-2 forward
def _layer_norm(h: np.ndarray, p: dict, eps: float = 1e-6) -> np.ndarray:
    mu = h.mean(axis=-1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
    return (h - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _linear(h: np.ndarray, p: dict) -> np.ndarray:
    """``h @ kernel + bias`` as one 2-D GEMM (NumPy's stacked matmul is far slower)."""
    out = np.ascontiguousarray(h).reshape(-1, h.shape[-1]) @ p["kernel"] + p["bias"]
    return out.reshape(h.shape[:-1] + (out.shape[-1],))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    """``jax.nn.gelu`` (``approximate=True``): ``½ x (1 + tanh(√(2/π)(x + 0.044715 x³)))``."""
    inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * (x * x * x))  # x**3 calls pow: slow
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def gpt2_forward(params: dict, examples: np.ndarray, estimates: np.ndarray, heads: int, layers: int) -> np.ndarray:
    """NumPy forward of :class:`ttscale.gpt2.GPT2` (pre-LN decoder, causal, tanh-GELU) → ``[b, j, d]``.

    ``params``: ``nnx.to_pure_dict(nnx.state(model, nnx.Param))`` as NumPy arrays; ``examples
    [b, n, d+1]``, ``estimates [b, j, d]``. Vectorised over prompts and tokens.
    """
    b, n, _ = examples.shape
    j = estimates.shape[1]
    T = n + j
    h = np.concatenate([_linear(examples, params["read_example"]) + params["type_embed"]["embedding"][0],
                        _linear(estimates, params["read_estimate"]) + params["type_embed"]["embedding"][1]], axis=1)
    h = h + params["position"]["embedding"][:T]
    width = h.shape[-1]
    dh = width // heads
    causal = np.tril(np.ones((T, T), bool))
    neg = np.finfo(np.float32).min
    for i in range(layers):
        p = params[f"block_{i}"]
        qkv = _linear(_layer_norm(h, p["ln_attn"]), p["qkv"])
        # contiguous operands: NumPy's batched matmul only calls BLAS on contiguous blocks
        q, k, v = (np.ascontiguousarray(a.reshape(b, T, heads, dh).transpose(0, 2, 1, 3))
                   for a in np.split(qkv, 3, axis=-1))
        scores = np.matmul(q, np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * np.float32(1.0 / np.sqrt(dh))
        scores = np.where(causal, scores, neg)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights = scores / scores.sum(axis=-1, keepdims=True)
        att = np.matmul(weights, v).transpose(0, 2, 1, 3).reshape(b, T, width)
        h = h + _linear(att, p["attn_out"])
        h = h + _linear(_gelu_tanh(_linear(_layer_norm(h, p["ln_mlp"]), p["mlp_in"])), p["mlp_out"])
    return _linear(_layer_norm(h[:, n:], params["ln_final"]), params["read_out"])


def gpt2_cot_estimates(params: dict, examples: np.ndarray, k_max: int, d: int, heads: int, layers: int) -> np.ndarray:
    """Test-time CoT with full forwards (no cache): ``ŵ_{t+1}`` = prediction at estimate ``t`` → ``[b, k_max, d]``."""
    b = examples.shape[0]
    est = np.zeros((b, k_max, d), np.float32)
    out = np.empty((b, k_max, d), np.float32)
    for t in range(k_max):
        pred = gpt2_forward(params, examples, est[:, : t + 1], heads, layers)[:, t]
        out[:, t] = pred
        if t + 1 < k_max:
            est[:, t + 1] = pred
    return out


def gpt2_forward_flops(width: int, layers: int, n_tokens: int, d: int, mlp_ratio: int = 4) -> float:
    """Matmul FLOPs of one causal forward over ``n_tokens`` tokens (per prompt, attention counted in full)."""
    T = n_tokens
    per_layer = 2 * T * width * 3 * width + 2 * T * T * width * 2 + 2 * T * width * width + 2 * T * width * mlp_ratio * width * 2
    return float(layers * per_layer + 2 * T * (d + 1) * width + 2 * T * width * d)
