"""Adaptive-stopping CoT: pseudo-Newton with a stopping rule that reads only the prompt (:mod:`ttscale.adaptive`).

``adaptive:rule=first_increase`` (default) or ``adaptive:rule=argmin``; the preconditioner is the
pseudo-Newton model's (``P = Γ(Λ, n)⁻¹`` per training cell, or ``P=FILE.npy``), or gradient descent's
``η I`` with ``eta=…``. ``errors(params, stats, k_max)[:, K]`` is the error of the estimate the rule
keeps under a budget of ``K`` passes, so the sweep's ``k`` axis reads as the budget. The model declares
no ``preconditioner``: its errors are not those of a fixed ``P`` (the closed forms of
:mod:`ttscale.theory` do not apply). The steps it keeps and the passes it spends are study outputs:
:func:`ttscale.adaptive.rollout_summary`.
"""

from __future__ import annotations

from ttscale import adaptive as core
from ttscale.models import gd, pseudo_newton
from ttscale.models.base import Model, format_options


def make(rule: str = "first_increase", P=None, eta=None) -> Model:
    """The adaptive model: a stopping ``rule`` (:data:`ttscale.adaptive.RULES`) on pseudo-Newton CoT with ``P``
    (default ``Γ(Λ, n)⁻¹``; or a fixed ``[d]``/``[d, d]`` array) or on gradient descent with step ``eta``."""
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a string, got {type(rule).__name__}")
    core._check_rule(rule)
    if P is not None and eta is not None:
        raise ValueError("give at most one of P and eta")
    base = gd.make(eta) if eta is not None else pseudo_newton.make(P)

    def errors(params: pseudo_newton.PseudoNewtonParams, stats, k_max: int):
        return core.rule_errors(params.P, stats, k_max, rule)

    options = {"rule": rule}
    if eta is not None:
        options["eta"] = float(eta)
    if P is not None:
        options["P"] = base.name.partition("P=")[2]  # the fixed P's digest
    return Model(f"adaptive:{format_options(options)}", base.init, errors, "statistics", None)
