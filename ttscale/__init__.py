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

from ttscale.spectra import (
    Covariance,
    as_covariance,
    from_eigenvalues,
    from_matrix,
    hardness,
    identity,
    power_law,
    random_orthogonal,
    rotated,
    stack,
    unstack,
)
from ttscale.prompts import (
    Normals,
    Prompts,
    Statistics,
    prompts_at,
    prompts_from_normals,
    sample_normals,
    sample_prompts,
    sample_statistics,
    statistics_of,
)
from ttscale import models
from ttscale.models import Model
from ttscale.lsa import (
    LSAParams,
    embed,
    forward,
    forward_last_column,
    optimal_params,
    paper_init,
    params_from_preconditioner,
    preconditioner_from_V,
    predict,
)
from ttscale.cot import (
    ErrorCurve,
    error_curve,
    lsa_errors,
    lsa_estimates,
    pseudo_newton_errors,
    pseudo_newton_estimates,
    rollout,
    squared_errors,
)
from ttscale.theory import (
    BestK,
    best_k,
    cor35_bound,
    cor35_rate,
    gamma,
    gamma_inverse,
    limit_error,
    matching_k,
    mixture_preconditioner,
    one_step_error,
    overthinking_term,
    second_moment,
    thm33_bound,
)

from ttscale.training import (
    Task,
    TaskArrays,
    TrainConfig,
    TrainResult,
    fit,
    load_params,
    make_task_arrays,
    make_train,
    make_model_train,
    make_train_batched,
    optimal_preconditioner,
    save_params,
    stack_task_arrays,
)
from ttscale.sweep import SweepSpec, prompt_errors, run_sweep, theory_on_grid
from ttscale.devices import use_cpu_cores
from ttscale.store import SpecMismatchError
from ttscale.selection import CRITERIA, Selection, TaskPool, paper_pool, select_mixture, task_pool

__version__ = "0.1.0"


def __getattr__(name):
    # Flax is imported only when the GPT-2 model is asked for.
    if name == "gpt2":
        import importlib

        return importlib.import_module("ttscale.gpt2")
    raise AttributeError(f"module 'ttscale' has no attribute {name!r}")
