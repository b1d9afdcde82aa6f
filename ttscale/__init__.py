"""ttscale: a JAX simulation suite for the science of test-time scaling.

Reproduces *Understanding the Role of Training Data in Test-Time Scaling* (arXiv 2510.03605):
in-context linear regression, the one-layer linear self-attention (LSA) model, test-time
chain of thought (CoT) as pseudo-Newton iteration, and the paper's closed forms.

The flat namespace re-exports the functional core::

    import ttscale as tts
    cov = tts.power_law(10, alpha=1.0)           # λ_i ∝ i^-1, tr = d
    P = tts.gamma_inverse(cov, n=20)             # learned preconditioner Γ⁻¹
    prompts = tts.sample_prompts(key, cov, length=200, batch=4096)
    errs = tts.pseudo_newton_errors(P, prompts, k_max=10)   # [batch, 11]
    tts.error_curve(errs).mean, tts.limit_error(P, cov, 10)

On a multi-core CPU call ``tts.use_cpu_cores()`` before any JAX operation: sweeps then shard
their prompts over one XLA device per core (the ``ttscale`` command line does this).
"""

#: Public name → the module that defines it. Loaded on first use (PEP 562), so ``import ttscale``
#: (and ``ttscale --help``) does not import JAX; ``from ttscale import power_law`` works as before.
_EXPORTS = {
    "Covariance": "ttscale.spectra",
    "as_covariance": "ttscale.spectra",
    "from_eigenvalues": "ttscale.spectra",
    "from_matrix": "ttscale.spectra",
    "hardness": "ttscale.spectra",
    "identity": "ttscale.spectra",
    "power_law": "ttscale.spectra",
    "random_orthogonal": "ttscale.spectra",
    "rotated": "ttscale.spectra",
    "stack": "ttscale.spectra",
    "unstack": "ttscale.spectra",
    "Normals": "ttscale.prompts",
    "Prompts": "ttscale.prompts",
    "Statistics": "ttscale.prompts",
    "prompts_at": "ttscale.prompts",
    "prompts_from_normals": "ttscale.prompts",
    "sample_normals": "ttscale.prompts",
    "sample_prompts": "ttscale.prompts",
    "sample_statistics": "ttscale.prompts",
    "statistics_of": "ttscale.prompts",
    "LSAParams": "ttscale.lsa",
    "embed": "ttscale.lsa",
    "forward": "ttscale.lsa",
    "forward_last_column": "ttscale.lsa",
    "optimal_params": "ttscale.lsa",
    "paper_init": "ttscale.lsa",
    "params_from_preconditioner": "ttscale.lsa",
    "preconditioner_from_V": "ttscale.lsa",
    "predict": "ttscale.lsa",
    "ErrorCurve": "ttscale.cot",
    "error_curve": "ttscale.cot",
    "lsa_errors": "ttscale.cot",
    "lsa_estimates": "ttscale.cot",
    "pseudo_newton_errors": "ttscale.cot",
    "pseudo_newton_estimates": "ttscale.cot",
    "rollout": "ttscale.cot",
    "squared_errors": "ttscale.cot",
    "BestK": "ttscale.theory",
    "best_k": "ttscale.theory",
    "scaling_law_error": "ttscale.theory",
    "contraction_rate": "ttscale.theory",
    "cor35_rate": "ttscale.theory",
    "cor35_bound": "ttscale.theory",
    "thm33_bound": "ttscale.theory",
    "gamma": "ttscale.theory",
    "gamma_inverse": "ttscale.theory",
    "limit_error": "ttscale.theory",
    "matching_k": "ttscale.theory",
    "mixture_preconditioner": "ttscale.theory",
    "one_step_error": "ttscale.theory",
    "overthinking_term": "ttscale.theory",
    "second_moment": "ttscale.theory",
    "one_step_error_bound": "ttscale.theory",
    "Task": "ttscale.training",
    "TaskArrays": "ttscale.training",
    "TrainConfig": "ttscale.training",
    "TrainResult": "ttscale.training",
    "fit": "ttscale.training",
    "load_params": "ttscale.training",
    "make_task_arrays": "ttscale.training",
    "make_train": "ttscale.training",
    "make_model_train": "ttscale.training",
    "make_train_batched": "ttscale.training",
    "optimal_preconditioner": "ttscale.training",
    "save_params": "ttscale.training",
    "stack_task_arrays": "ttscale.training",
    "TaskMixture": "ttscale.tasks",
    "task_mixture": "ttscale.tasks",
    "stack_mixtures": "ttscale.tasks",
    "Model": "ttscale.models",
    "SpectrumGrid": "ttscale.families",
    "parse_spectra": "ttscale.families",
    "register_family": "ttscale.families",
    "SweepSpec": "ttscale.sweep",
    "prompt_errors": "ttscale.sweep",
    "run_sweep": "ttscale.sweep",
    "theory_on_grid": "ttscale.sweep",
    "use_cpu_cores": "ttscale.devices",
    "SpecMismatchError": "ttscale.store",
    "CRITERIA": "ttscale.selection",
    "Selection": "ttscale.selection",
    "TaskPool": "ttscale.selection",
    "paper_pool": "ttscale.selection",
    "select_mixture": "ttscale.selection",
    "task_pool": "ttscale.selection",
}
_SUBMODULES = ("models", "gpt2", "cot", "lsa", "prompts", "spectra", "theory", "training", "sweep", "store", "summary", "selection", "experiments", "plots", "report", "rng", "devices", "tasks", "families", "finite_m", "adaptive", "gd_theory")

__version__ = "0.1.0"


def __getattr__(name):
    import importlib

    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups are plain attribute reads
        return value
    if name in _SUBMODULES:  # e.g. ttscale.models, ttscale.gpt2 (Flax only when asked for)
        return importlib.import_module(f"ttscale.{name}")
    raise AttributeError(f"module 'ttscale' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = sorted(_EXPORTS)
