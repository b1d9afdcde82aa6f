"""Per-cell random streams of the sweep engine, observed through the numbers it returns.

At ``k = 0`` the error is ``||ŵ_0 − w||² = ||w||²``: it does not depend on the spectrum, on ``n`` or
on the model, only on the ``w`` drawn for that prompt. So two cells show the same per-prompt
``k = 0`` errors exactly when they were given the same random stream. With independent prompts
(``common_random_numbers=False``) every (spectrum, n, m) cell must have its own stream; with common
random numbers every cell of one ``m`` shares one. Expectations are built from these observations
(and the law of ``||w||² ~ χ²_d``), never from :func:`ttscale.sweep.cell_keys`.

``GRID``'s test lengths are ``≥ d``, so the default sampler draws the statistics directly (Bartlett);
both samplers read ``w`` from the same stream of the same cell key, so a cell's ``k = 0`` errors
are the same under either, and its ``k ≥ 1`` errors are not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ttscale.sweep import SweepSpec, prompt_errors

D, PROMPTS = 3, 64
GRID = dict(d=D, alphas=(0.0, 0.5, 1.5), ns=(4.0, 9.0, 20.0), ms=(6.0, 11.0), k_max=1, prompts=PROMPTS, chunk=PROMPTS)


def _k0(spec: SweepSpec, m_index: int) -> np.ndarray:
    """``||w||²`` per prompt of every cell: ``[spectra · n, prompts]`` (float64)."""
    errs = prompt_errors(spec, m_index)  # [S, N, P, K + 1]
    assert errs.shape == (3, 3, PROMPTS, 2)
    return np.asarray(errs[..., 0], np.float64).reshape(9, PROMPTS)


@pytest.fixture(scope="module")
def independent():
    spec = SweepSpec(**GRID, common_random_numbers=False)
    return [_k0(spec, mi) for mi in range(len(GRID["ms"]))]


@pytest.fixture(scope="module")
def common():
    spec = SweepSpec(**GRID, common_random_numbers=True)
    return [_k0(spec, mi) for mi in range(len(GRID["ms"]))]


def _cell(c: int) -> tuple[int, int]:
    return divmod(c, 3)  # (spectrum, n index)


def test_independent_prompts_give_every_cell_its_own_stream(independent):
    """Every pair of the 3 × 3 (spectrum × n) cells, and the same cell at two m indices, draws different w.

    Catches e.g. a key that ignores the spectrum (every spectrum on one stream) or one built from
    ``s + i_n`` (cells (0, 1) and (1, 0) on one stream)."""
    cells = np.concatenate(independent)  # [2 · 9, P]: m-major
    labels = [(mi,) + _cell(c) for mi in range(len(independent)) for c in range(9)]
    for a, b in itertools.combinations(range(len(labels)), 2):
        same = np.mean(cells[a] == cells[b])
        # independent continuous draws never coincide; a shared stream coincides everywhere
        assert same == 0.0, f"cells (m, spectrum, n) {labels[a]} and {labels[b]} share {same:.0%} of their w draws"


def test_independent_streams_are_standard_normal_w(independent):
    """``||w||² ~ χ²_d`` in every cell: mean ``d``, variance ``2d`` (pooled over 18 × 64 prompts, 4.5 s.e.)."""
    x = np.concatenate(independent).ravel()
    se = np.sqrt(2 * D / x.size)
    assert abs(x.mean() - D) < 4.5 * se, (x.mean(), se)
    assert np.all(x > 0) and np.all(np.isfinite(x))
    # the cells are not one stream shifted either: their per-cell means scatter like independent χ² means
    means = np.concatenate(independent).mean(axis=1)
    assert np.std(means, ddof=1) > 0.25 * np.sqrt(2 * D / PROMPTS)


def test_common_random_numbers_share_one_stream_per_m(common):
    """With CRN every cell of one m has the very same w (bit for bit), and the two m differ."""
    for k0 in common:
        np.testing.assert_array_equal(k0, np.broadcast_to(k0[0], k0.shape))
    assert np.mean(common[0][0] == common[1][0]) == 0.0


def test_both_samplers_give_a_cell_the_same_stream_and_different_statistics(independent):
    """sampler="prompts" vs the default (statistics): the same w in every cell (k = 0, bit for bit), different
    S (k = 1 differs in every prompt), and the per-prompt errors do not depend on the chunk size."""
    spec = SweepSpec(**GRID, common_random_numbers=False, sampler="prompts")
    assert not spec.draws_statistics(GRID["ms"][0]) and SweepSpec(**GRID).draws_statistics(GRID["ms"][0])
    prompts = prompt_errors(spec, 0)
    np.testing.assert_array_equal(np.asarray(prompts[..., 0], np.float64).reshape(9, PROMPTS), independent[0])
    statistics = prompt_errors(SweepSpec(**GRID), 0)
    assert np.mean(prompts[..., 1] == statistics[..., 1]) < 0.01
    rechunked = prompt_errors(SweepSpec(**dict(GRID, chunk=24)), 0)  # chunks of 24, 24, 16: full blocks
    np.testing.assert_array_equal(rechunked, statistics)
