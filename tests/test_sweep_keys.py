"""Per-cell random streams of the sweep engine, observed through the numbers it returns.

At ``k = 0`` the error is ``||ŵ_0 − w||² = ||w||²``: it does not depend on the spectrum, on ``n`` or
on the model, only on the ``w`` drawn for that prompt. So two cells show the same per-prompt
``k = 0`` errors exactly when they were given the same random stream. With independent prompts
(``common_random_numbers=False``) every (spectrum, n, m) cell must have its own stream; with common
random numbers every cell of one ``m`` shares one. Expectations are built from these observations
(and the law of ``||w||² ~ χ²_d``), never from :func:`ttscale.sweep.cell_keys`.
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
