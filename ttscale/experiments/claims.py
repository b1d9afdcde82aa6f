"""Claims: the rows of the reproduction report, verdict rules and the claim builders the presets share.

A :class:`Claim` is computed **only from a preset's Dataset** (never typed in). The builders here
turn a common measurement into a claim for any grid — e.g. :func:`k_compensates_n` for any pair of
prompt lengths, :func:`matches_closed_form` for any simulated-vs-exact pair — so that a preset file
states *what* it claims and these functions say *how* it is measured.

Verdicts respect noise. Every comparison behind an ordering claim is *holds*, *reversed* or *not resolved*
(:func:`order_outcome`: a difference counts only beyond about 2 standard errors of the difference, paired where
the data are paired); a claim that is a conjunction of orders (the paper's task ranking, :func:`ranking_claim`)
takes :func:`verdict_from_orders`, a claim about a fraction of cells :func:`verdict_from_counts`. Rankings print
ties as ties (:func:`tie_aware_ranking`: ``A > {B ≈ C} > D``). The vocabulary is :data:`VERDICTS`, with
``NOT RESOLVED`` for "within noise".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Optional, Sequence

import numpy as np

# ---------------------------------------------------------------------------- the verdict vocabulary (defined once)
#: A claim's verdict. ``HOLDS``: every judged comparison goes the claimed way beyond noise (or a fraction reaches its
#: threshold); ``DOES NOT HOLD``: some comparison goes the other way beyond noise (or the fraction is below the lower
#: threshold); ``PARTLY``: some comparisons hold and none is reversed, the rest unresolved (or a fraction between the
#: thresholds); ``NOT RESOLVED``: the data cannot decide — the differences are within noise (about 2 s.e.);
#: ``SKIPPED``: not computed.
HOLDS, FAILS, PARTLY, SKIPPED = "HOLDS", "DOES NOT HOLD", "PARTLY", "SKIPPED"
NOT_RESOLVED = "NOT RESOLVED"
VERDICTS = (HOLDS, PARTLY, NOT_RESOLVED, FAILS, SKIPPED)
#: The outcome of one comparison (one pairwise order, one cell): beyond ``z`` s.e. the claimed way, the other way, or within noise.
ORDER_HOLDS, ORDER_REVERSED, ORDER_UNRESOLVED = "holds", "reversed", "not resolved"
ORDER_OUTCOMES = (ORDER_HOLDS, ORDER_REVERSED, ORDER_UNRESOLVED)
#: The default resolution: a difference counts only beyond ``Z`` standard errors of the difference.
Z = 2.0
INF = math.inf


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the claims report.

    ``statement``: what the paper (or docs/science.md) says; ``measurement``: what our data shows,
    with its uncertainty, as text; ``value``/``uncertainty``: the headline number;
    ``verdict``: one of :data:`VERDICTS` (``HOLDS`` / ``PARTLY`` / ``NOT RESOLVED`` / ``DOES NOT HOLD`` / ``SKIPPED``); ``evidence``:
    the numbers the verdict rests on; ``preset``: the preset that produced it.
    """

    name: str
    statement: str
    measurement: str
    verdict: str
    value: float = math.nan
    uncertainty: float = math.nan
    evidence: str = ""
    preset: str = ""

    def to_dict(self) -> dict:
        """The claim as a plain dict (the rows of ``claims.json``)."""
        return dataclasses.asdict(self)


def verdict_from_fraction(fraction: float, holds_at: float = 1.0, partly_at: float = 0.5) -> str:
    """``HOLDS`` if ``fraction ≥ holds_at``, ``PARTLY`` if ``≥ partly_at``, else ``DOES NOT HOLD``."""
    if fraction >= holds_at - 1e-12:
        return HOLDS
    if fraction >= partly_at:
        return PARTLY
    return FAILS


def order_outcome(diff, se, z: float = Z, atol: float = 0.0) -> str:
    """One comparison whose claim is ``diff > 0``: ``"holds"`` if ``diff > z·se`` (and ``diff > atol``),
    ``"reversed"`` if ``diff < −z·se`` (and ``diff < −atol``), else ``"not resolved"`` (:data:`ORDER_OUTCOMES`).

    ``se`` is the standard error of ``diff`` itself (paired: :func:`paired_difference`; independent estimates:
    ``hypot(se_a, se_b)``). A nan ``diff`` or ``se`` is not resolved; ``se = 0`` resolves any ``|diff| > atol``
    (an exact difference), and an exact tie (``diff = 0``) is never resolved. ``atol`` absorbs round-off
    (e.g. ``1e-6`` for probabilities a float32 solver returns)."""
    diff, se = float(diff), float(se)
    if math.isnan(diff) or math.isnan(se):
        return ORDER_UNRESOLVED
    tol = z * se if math.isfinite(se) else math.inf
    if diff > tol and diff > atol:
        return ORDER_HOLDS
    if diff < -tol and diff < -atol:
        return ORDER_REVERSED
    return ORDER_UNRESOLVED


def verdict_from_orders(outcomes) -> str:
    """The verdict of a claim that is the conjunction of comparisons (each an :func:`order_outcome`):
    ``HOLDS`` if every one holds, ``DOES NOT HOLD`` if any is reversed beyond noise, ``PARTLY`` if some hold and
    the rest are not resolved, ``NOT RESOLVED`` if none is resolved; ``SKIPPED`` when there is nothing to compare."""
    outcomes = list(outcomes)
    bad = [o for o in outcomes if o not in ORDER_OUTCOMES]
    if bad:
        raise ValueError(f"outcomes must be drawn from {ORDER_OUTCOMES}, got {bad[:3]}")
    if not outcomes:
        return SKIPPED
    if ORDER_REVERSED in outcomes:
        return FAILS
    if all(o == ORDER_HOLDS for o in outcomes):
        return HOLDS
    return PARTLY if ORDER_HOLDS in outcomes else NOT_RESOLVED


def verdict_from_counts(holds: int, reversed_: int, unresolved: int, holds_at: float = 1.0,
                        partly_at: float = 0.5) -> str:
    """The verdict of a "the claim holds in a fraction of cells" rule (:func:`verdict_from_fraction`) when some
    cells are not resolved: the true fraction lies in ``[holds / total, (holds + unresolved) / total]``. If both
    ends give the same verdict, that is the verdict; otherwise the noise leaves it open: ``NOT RESOLVED``.
    ``SKIPPED`` when ``total = 0``. Unlike :func:`verdict_from_orders` (a conjunction: one reversed comparison
    fails the claim) a few reversed cells only lower the fraction."""
    holds, reversed_, unresolved = int(holds), int(reversed_), int(unresolved)
    if min(holds, reversed_, unresolved) < 0:
        raise ValueError(f"counts must be non-negative, got {(holds, reversed_, unresolved)}")
    total = holds + reversed_ + unresolved
    if total == 0:
        return SKIPPED
    low = verdict_from_fraction(holds / total, holds_at, partly_at)
    high = verdict_from_fraction((holds + unresolved) / total, holds_at, partly_at)
    return low if low == high else NOT_RESOLVED


def count_outcomes(outcomes) -> tuple[int, int, int]:
    """``(holds, reversed, not resolved)`` counts of a list of :func:`order_outcome` strings."""
    outcomes = list(outcomes)
    return (outcomes.count(ORDER_HOLDS), outcomes.count(ORDER_REVERSED), outcomes.count(ORDER_UNRESOLVED))


def outcome_counts_text(outcomes) -> str:
    """``"3 hold, 1 reversed, 2 not resolved"`` for a list of :func:`order_outcome` strings."""
    h, r, u = count_outcomes(outcomes)
    return f"{h} hold, {r} reversed, {u} not resolved"


def paired_difference(a, b, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the paired difference ``a − b`` along ``axis`` (the pairing axis: pools, prompts):
    ``mean(a − b)``, ``std(a − b, ddof=1)/√N``. ``N = 1`` gives a nan s.e. unless the difference is exactly 0
    (then 0: an exact tie)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = diff.shape[axis]
    mean = diff.mean(axis=axis)
    if n < 2:
        se = np.where(mean == 0, 0.0, np.nan)
    else:
        se = diff.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, se


# ============================================================================ tie-aware rankings
@dataclasses.dataclass(frozen=True)
class Ranking:
    """A ranking of ``T`` groups that separates only differences beyond ``z`` s.e. (:func:`tie_aware_ranking`).

    ``mean [T]``, ``stderr [T]``: each group's mean and s.e. over the paired samples; ``diff [T, T]``,
    ``diff_se [T, T]``: the mean and s.e. of the paired difference ``v_i − v_j``; ``order``: groups by
    decreasing mean; ``tiers``: consecutive groups of ``order`` such that every group of a tier is above every
    group of every later tier beyond noise (within a tier not every pair need be tied: the per-pair outcomes,
    :meth:`outcome`, say which are).
    """

    names: tuple
    mean: np.ndarray
    stderr: np.ndarray
    diff: np.ndarray
    diff_se: np.ndarray
    z: float
    atol: float
    order: tuple
    tiers: tuple

    def index(self, name) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown group {name!r}; the ranking has {list(self.names)}") from None

    def outcome(self, above, below) -> str:
        """:func:`order_outcome` of the claim "``above`` has the larger mean than ``below``" (paired s.e.)."""
        i, j = self.index(above), self.index(below)
        return order_outcome(self.diff[i, j], self.diff_se[i, j], self.z, self.atol)

    def text(self) -> str:
        """``"Hard-Long > {Easy-Short ≈ Hard-Short} > Easy-Long"``: tiers separated by ``>``, a tier of several
        groups in braces joined by ``≈``."""
        parts = []
        for tier in self.tiers:
            names = [str(self.names[i]) for i in tier]
            parts.append(names[0] if len(names) == 1 else "{" + " ≈ ".join(names) + "}")
        return " > ".join(parts)

    def judge(self, expected: Sequence) -> list[tuple]:
        """Each pairwise order the ranking ``expected`` (first = largest) asserts, judged separately:
        ``[(above, below, outcome, diff, se)]`` for every pair ``above`` before ``below`` in ``expected``."""
        for name in expected:
            self.index(name)
        out = []
        for a, b in itertools.combinations(list(expected), 2):
            i, j = self.index(a), self.index(b)
            out.append((a, b, self.outcome(a, b), float(self.diff[i, j]), float(self.diff_se[i, j])))
        return out


def tie_aware_ranking(samples, names: Sequence, z: float = Z, atol: float = 1e-6) -> Ranking:
    """Rank ``T`` groups by their mean over paired samples, separating only differences beyond ``z`` s.e.

    ``samples [N, T]``: one row per paired sample (a random pool: every group measured on it), one column per
    group; ``names``: the ``T`` group names. Two groups are ordered when the paired difference of their values
    exceeds ``z`` times its standard error and ``atol`` (:func:`paired_difference`, :func:`order_outcome`), so
    exact ties (identical columns) and within-noise differences stay ties. The tiers cut the mean order only
    where every pair across the cut is resolved. Returns a :class:`Ranking`.
    """
    v = np.asarray(samples, np.float64)
    names = tuple(str(n) for n in names)
    if v.ndim != 2:
        raise ValueError(f"samples must be [samples, groups], got shape {v.shape}")
    if v.shape[1] != len(names):
        raise ValueError(f"names must name the {v.shape[1]} groups (columns of samples), got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {list(names)}")
    if v.shape[0] < 1:
        raise ValueError("samples must hold at least one row")
    if not np.all(np.isfinite(v)):
        raise ValueError("samples must be finite")
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"z must be a positive number, got {z}")
    T = v.shape[1]
    mean = v.mean(axis=0)
    stderr = v.std(axis=0, ddof=1) / math.sqrt(v.shape[0]) if v.shape[0] > 1 else np.full(T, np.nan)
    diff, diff_se = paired_difference(v[:, :, None], v[:, None, :], axis=0)
    order = tuple(int(i) for i in np.argsort(-mean, kind="stable"))
    tiers, current = [], [order[0]]
    for p in range(1, T):
        upper, lower = order[:p], order[p:]
        cut = all(order_outcome(diff[i, j], diff_se[i, j], z, atol) == ORDER_HOLDS for i in upper for j in lower)
        if cut:
            tiers.append(tuple(current))
            current = []
        current.append(order[p])
    tiers.append(tuple(current))
    return Ranking(names, mean, stderr, diff, diff_se, float(z), float(atol), order, tuple(tiers))


def ranking_claim(name: str, statement: str, rankings: dict, expected: Sequence, evidence: str = "") -> Claim:
    """"The groups rank as ``expected``" judged pair by pair for each :class:`Ranking` in ``rankings``
    (``{label: Ranking}``, e.g. one per criterion): the verdict is :func:`verdict_from_orders` of every pairwise
    order of ``expected`` in every ranking; the measurement gives each ranking's tie-aware text and its
    per-pair outcomes (``diff ± s.e.``); ``value`` is the fraction of (ranking, pair) orders that hold."""
    if not rankings:
        return Claim(name, statement, "no rankings to judge", SKIPPED, evidence=evidence)
    rows, outcomes, per = [], [], []
    for label, rk in rankings.items():
        judged = rk.judge(expected)
        outs = [o for _, _, o, _, _ in judged]
        outcomes += outs
        pairs = ", ".join(f"{a} > {b} {o} ({d:+.3g} ± {se:.2g})" for a, b, o, d, se in judged)
        rows.append(f"{label}: {rk.text()} [{pairs}]")
        per.append(f"{label}: {verdict_from_orders(outs)} ({outcome_counts_text(outs)})")
    h, _, _ = count_outcomes(outcomes)
    ev = (f"each pairwise order of {' > '.join(map(str, expected))} judged separately: holds / reversed if the paired "
          f"difference exceeds {next(iter(rankings.values())).z:g} s.e., else not resolved; ties shown as ≈. "
          + "; ".join(per) + (f". {evidence}" if evidence else ""))
    return Claim(name, statement, "; ".join(rows), verdict_from_orders(outcomes),
                 value=h / len(outcomes) if outcomes else math.nan, evidence=ev)


def fmt(x, digits=3) -> str:
    """A number for a measurement: ``n/a`` for ``None``/nan, ``inf``, else ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


# ============================================================================ measurements on one curve
def crossing_k(curve, target: float) -> float:
    """First (fractional) ``k`` at which ``curve[k]`` falls to ``target``, interpolating ``log error`` linearly.

    ``curve [K+1]`` indexed by ``k = 0..K``; returns ``nan`` if it never reaches ``target``.
    """
    curve = np.asarray(curve, dtype=float)
    if not np.isfinite(target) or target <= 0:
        return math.nan
    below = np.nonzero(np.isfinite(curve) & (curve <= target))[0]
    if below.size == 0:
        return math.nan
    j = int(below[0])
    if j == 0:
        return 0.0
    a, b = curve[j - 1], curve[j]
    if not (np.isfinite(a) and a > 0 and b > 0) or a == b:
        return float(j)
    t = (math.log(a) - math.log(target)) / (math.log(a) - math.log(b))
    return float(j - 1 + min(max(t, 0.0), 1.0))


def matching_k_interval(curve, stderr, target, target_stderr, z: float = 2.0) -> tuple[float, float, float]:
    """``crossing_k`` at the means and its ``±z`` s.e. interval (curve and target moved in opposite directions)."""
    curve = np.asarray(curve, float)
    stderr = np.nan_to_num(np.asarray(stderr, float), nan=0.0, posinf=0.0)
    k = crossing_k(curve, target)
    lo = crossing_k(curve - z * stderr, target + z * target_stderr)
    hi = crossing_k(curve + z * stderr, max(target - z * target_stderr, 1e-300))
    return k, lo, hi


def argmin_set(mean, stderr, z: float = 2.0, k_min: int = 1) -> tuple[int, int, int]:
    """Argmin of ``mean[k_min:]`` (as a ``k``) and the range of ``k`` whose mean is within ``z`` s.e. of the minimum."""
    mean = np.asarray(mean, np.float64)[k_min:]
    se = np.nan_to_num(np.asarray(stderr, np.float64)[k_min:], nan=np.inf)
    finite = np.where(np.isfinite(mean), mean, np.inf)
    j = int(np.argmin(finite))
    tol = z * np.sqrt(se**2 + se[j] ** 2)
    near = np.nonzero(finite <= finite[j] + np.where(np.isfinite(tol), tol, 0.0))[0]
    return j + k_min, int(near.min()) + k_min, int(near.max()) + k_min


def rises_after_argmin(mean, stderr, z: float = 2.0) -> tuple[int, int, int, bool]:
    """``(k*, lo, hi, rises)``: :func:`argmin_set` of a curve over ``k = 0..K`` and whether the last point lies
    more than ``z`` combined s.e. above the minimum (``k* < K`` and ``mean[K] > mean[k*] + z √(se_K² + se_k*²)``)."""
    mean, stderr = np.asarray(mean, np.float64), np.asarray(stderr, np.float64)
    kmax = mean.shape[-1] - 1
    k_star, lo, hi = argmin_set(mean, stderr, z)
    rises = bool(k_star < kmax and mean[kmax] > mean[k_star] + z * math.hypot(stderr[kmax], stderr[k_star]))
    return k_star, lo, hi, rises


def argmin_interval(mean, stderr, z: float = Z, k_min: int = 1) -> tuple[int, int, int]:
    """``(k*, lo, hi)``: the argmin ``k*`` of ``mean[k_min:]`` and the contiguous run ``lo ≤ k* ≤ hi`` of ``k``
    whose mean lies within ``z √(se_k² + se_k*²)`` of the minimum — the ``k`` not excluded as the argmin of a
    unimodal curve (a point resolved above the minimum on one side of ``k*`` rules out everything beyond it).
    Unlike :func:`argmin_set` the run stops at the first resolved point, so a heavy-tailed stretch far from
    ``k*`` does not widen it. Non-finite means count as ``+inf`` (resolved above); a nan s.e. as unresolved."""
    mean = np.asarray(mean, np.float64)[k_min:]
    se = np.asarray(stderr, np.float64)[k_min:]
    finite = np.where(np.isnan(mean), np.inf, mean)
    j = int(np.argmin(finite))

    def near(i):
        if not np.isfinite(finite[i]):
            return False
        tol = z * math.hypot(se[i], se[j])
        return not (finite[i] - finite[j] > tol) if not math.isnan(tol) else True

    lo = j
    while lo - 1 >= 0 and near(lo - 1):
        lo -= 1
    hi = j
    while hi + 1 < finite.size and near(hi + 1):
        hi += 1
    return j + k_min, lo + k_min, hi + k_min


def falls_then_rises_outcome(mean, stderr, z: float = Z) -> tuple[str, str, str, tuple[int, int, int]]:
    """Noise-aware "the curve first falls, then rises" over ``k = 0..K`` (``k ≥ 1`` judged):
    ``(outcome, falls, rises, (k*, lo, hi))`` with :func:`argmin_interval` ``(k*, lo, hi)`` and

    * falls: ``holds`` if ``mean[1] > mean[k*] + z √(se_1² + se_k*²)``; ``reversed`` if ``k* = 1`` and the
      interval ends by ``k = 2`` (rising from the start: every ``k ≥ 3`` resolved above ``k = 1``); else ``not resolved``;
    * rises: ``holds`` if some ``k > k*`` has ``mean[k] > mean[k*] + z √(se_k² + se_k*²)``; ``reversed`` if
      ``k* = K`` and the interval starts at ``K − 1`` or later (still falling at the end: every ``k ≤ K − 2`` resolved
      above the minimum, so at most a one-step rise at the very end could hide in the noise); else ``not resolved``;
    * outcome: ``holds`` if both hold, ``reversed`` if either is reversed, else ``not resolved``.
    """
    mean, stderr = np.asarray(mean, np.float64), np.asarray(stderr, np.float64)
    kmax = mean.shape[-1] - 1
    k_star, lo, hi = argmin_interval(mean, stderr, z)
    best, se_best = mean[k_star], stderr[k_star]
    falls = order_outcome(mean[1] - best, math.hypot(stderr[1], se_best), z) if k_star > 1 else ORDER_UNRESOLVED
    if k_star == 1 and hi <= 2 and kmax > 2:
        falls = ORDER_REVERSED
    rises = ORDER_UNRESOLVED
    later = [order_outcome((mean[k] if np.isfinite(mean[k]) else np.inf) - best, math.hypot(stderr[k], se_best), z)
             for k in range(k_star + 1, kmax + 1)]
    if ORDER_HOLDS in later:
        rises = ORDER_HOLDS
    elif k_star == kmax and lo >= kmax - 1 and kmax > 2:
        rises = ORDER_REVERSED
    if ORDER_REVERSED in (falls, rises):
        outcome = ORDER_REVERSED
    elif falls == rises == ORDER_HOLDS:
        outcome = ORDER_HOLDS
    else:
        outcome = ORDER_UNRESOLVED
    return outcome, falls, rises, (k_star, lo, hi)


def interval_order(a: tuple, b: tuple) -> str:
    """Claim "``b`` lies after ``a``" for two intervals ``(lo, hi)``: ``holds`` if ``lo_b > hi_a``, ``reversed``
    if ``hi_b < lo_a``, else (overlap, or a nan end) ``not resolved``. nan ends count as unknown; ``inf`` ends
    are ordinary values (never crossing within ``K`` counts as ``+inf``)."""
    (lo_a, hi_a), (lo_b, hi_b) = (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))
    if any(math.isnan(x) for x in (lo_a, hi_a, lo_b, hi_b)):
        return ORDER_UNRESOLVED
    if lo_b > hi_a:
        return ORDER_HOLDS
    if hi_b < lo_a:
        return ORDER_REVERSED
    return ORDER_UNRESOLVED


def nondecreasing_fraction(values, axis: int = 0, tol: float = 1e-9) -> tuple[int, int]:
    """``(ok, pairs)``: how many adjacent pairs along ``axis`` satisfy ``v[i+1] ≥ v[i] − tol`` (nan counts as ``+inf``;
    pairs where both are ``+inf`` are skipped)."""
    v = np.moveaxis(np.where(np.isnan(np.asarray(values, np.float64)), np.inf, np.asarray(values, np.float64)), axis, 0)
    a, b = v[:-1], v[1:]
    both_inf = np.isinf(a) & np.isinf(b)
    ok = (b >= a - tol) & ~both_inf
    return int(ok.sum()), int((~both_inf).sum())


# ============================================================================ shared claim builders
def _cells(ds, over: Sequence[str]) -> list[dict]:
    return [dict(zip(over, vals)) for vals in itertools.product(*[list(ds[o].values) for o in over])]


def matching_k_cells(ds, n_short, n_long, over: Sequence[str] = (), mean: str = "mean", stderr: str = "stderr",
                     z: float = 2.0) -> dict:
    """For every cell of the dims ``over``: the ``k`` at which the curve at ``n = n_short`` falls to the level of
    ``n = n_long`` at ``k = 1``, with its ``±z`` s.e. interval → ``{cell tuple: (k, lo, hi)}`` (:func:`matching_k_interval`)."""
    out = {}
    for cell in _cells(ds, over):
        cur = ds.sel(cell) if cell else ds
        target = float(cur[mean].sel(n=n_long, k=1))
        tse = float(cur[stderr].sel(n=n_long, k=1))
        out[tuple(cell.values())] = matching_k_interval(cur[mean].sel(n=n_short).values, cur[stderr].sel(n=n_short).values,
                                                        target, tse, z)
    return out


def k_compensates_n(ds, n_short, n_long, over: Sequence[str] = (), mean: str = "mean", stderr: str = "stderr",
                    name: str = "k_compensates_n", subject: str = "", label: Optional[Callable] = None,
                    extra: str = "", holds_at: float = 1.0, partly_at: float = 0.5) -> tuple[Claim, dict]:
    """"More CoT steps compensate a shorter training context": ``n_short`` reaches the error of ``n_long`` at ``k = 1``.

    Measured in every cell of the dims ``over`` (:func:`matching_k_cells`). A cell *holds* when even the
    pessimistic end of the ``±2`` s.e. interval crosses within ``k ≤ K`` (``hi`` finite), is *reversed* when not
    even the optimistic end does (``lo`` nan), else is not resolved; the verdict is :func:`verdict_from_counts`.
    ``label(cell) → str`` names a cell in the measurement; ``subject`` prefixes the statement (``"GPT-2: "``);
    ``extra`` is appended to the measurement. With one cell, ``value`` is its matching ``k``. Returns the claim
    and the cells (for claims that reuse them).
    """
    cells = matching_k_cells(ds, n_short, n_long, over, mean, stderr)
    label = label or (lambda cell: ", ".join(f"{k}={fmt(float(v)) if isinstance(v, (int, float, np.number)) else v}"
                                             for k, v in cell.items()))
    rows, outcomes = [], []
    for key, (k, lo, hi) in cells.items():
        outcomes.append(ORDER_HOLDS if np.isfinite(hi) else (ORDER_REVERSED if not np.isfinite(lo) else ORDER_UNRESOLVED))
        cell = dict(zip(over, key))
        head = f"{label(cell)}: " if cell else ""
        rows.append(f"{head}k = {fmt(k)} [{fmt(lo)}, {fmt(hi)}]")
    ok, bad, unres = count_outcomes(outcomes)
    measurement = "; ".join(rows) + (f"; {extra}" if extra else "")
    value = next(iter(cells.values()))[0] if len(cells) == 1 else math.nan
    claim = Claim(
        name,
        f"{subject}More test-time steps compensate a shorter training context: n = {float(n_short):g} reaches the error "
        f"of n = {float(n_long):g} at k = 1 after finitely many CoT steps (Cor 3.5).",
        measurement, verdict_from_counts(ok, bad, unres, holds_at, partly_at), value=value,
        evidence=f"crossing within k ≤ {int(ds.k.max())} at both ends of the ±2 s.e. interval in {ok}/{len(cells)} cells, "
                 f"at neither end in {bad}, not resolved in {unres}",
    )
    return claim, cells


def within_z(sim, exact, stderr, z: float = 4.0) -> tuple[float, float, int]:
    """``(fraction, max |zscore|, cells)``: the fraction of all cells where ``|sim − exact| ≤ z · stderr`` (a
    non-finite z-score counts as outside), the largest finite ``|zscore|`` and the number of cells."""
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.asarray((np.asarray(sim, np.float64) - np.asarray(exact, np.float64)) / np.asarray(stderr, np.float64))
    if zs.size == 0:
        return math.nan, math.nan, 0
    finite = np.abs(zs[np.isfinite(zs)])
    return float(np.mean(np.abs(zs) <= z)), float(finite.max()) if finite.size else math.nan, int(zs.size)


def matches_closed_form(name: str, statement: str, sim, exact, stderr, cells: str = "cells", z: float = 4.0,
                        holds_at: float = 0.99, partly_at: float = 0.9) -> Claim:
    """"The simulation equals the closed form": the fraction of ``cells`` within ``z`` s.e. (:func:`within_z`),
    ``HOLDS`` at ``≥ holds_at``, ``PARTLY`` at ``≥ partly_at``."""
    frac, zmax, count = within_z(sim, exact, stderr, z)
    return Claim(name, statement, f"{100 * frac:.1f} % of {count} {cells} within {z:g} s.e.; max |z| = {zmax:.2f}",
                 verdict_from_fraction(frac, holds_at, partly_at), value=frac)


def upper_bound_holds(name: str, statement: str, exact, bound, atol: float = 1e-4, evidence: str = "") -> Claim:
    """"``exact ≤ bound`` everywhere": ``HOLDS`` iff ``min(bound − exact) ≥ −atol``; reports the margin and the ratio range."""
    exact, bound = np.asarray(exact, np.float64), np.asarray(bound, np.float64)
    margin = float(np.min(bound - exact))
    ratio = bound / exact
    return Claim(name, statement,
                 f"min(bound − exact) = {margin:.3g} over all cells; bound/exact ranges {float(np.min(ratio)):.3g}–{float(np.max(ratio)):.3g}",
                 HOLDS if margin >= -atol else FAILS, value=margin, evidence=evidence)


__all__ = [
    "Claim", "HOLDS", "FAILS", "PARTLY", "SKIPPED", "NOT_RESOLVED", "VERDICTS", "ORDER_HOLDS", "ORDER_REVERSED",
    "ORDER_UNRESOLVED", "ORDER_OUTCOMES", "Z", "order_outcome", "verdict_from_orders", "verdict_from_counts",
    "count_outcomes", "outcome_counts_text", "paired_difference", "Ranking", "tie_aware_ranking", "ranking_claim",
    "argmin_interval", "falls_then_rises_outcome", "interval_order", "verdict_from_fraction", "fmt", "crossing_k", "matching_k_interval",
    "argmin_set", "rises_after_argmin", "nondecreasing_fraction", "matching_k_cells", "k_compensates_n", "within_z",
    "matches_closed_form", "upper_bound_holds",
]
