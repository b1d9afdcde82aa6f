"""Where the test suite's compile time goes: a pytest plugin and its summary.

    PYTHONPATH=benchmarks TTSCALE_COMPILE_PROFILE=/tmp/prof pytest -n 2 -q -p no:cacheprovider -p compile_profile
    python benchmarks/compile_profile.py /tmp/prof

The plugin adds up JAX's compile events (``jax.monitoring``: tracing, lowering to MLIR, XLA's backend
compile) in each test process, per program name and test, and writes one JSON file per xdist worker into
``$TTSCALE_COMPILE_PROFILE``. Child processes a test starts are not counted. The summary prints the seconds
per event, the share of single JAX operations run eagerly (programs named after a ``jax.lax`` or
``jax.numpy`` function: compiled one per operation, shape and dtype), and the largest programs and tests (also by
those eager operations alone).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys

_totals: dict = collections.defaultdict(float)
_current = {"test": None}


def _listen(event: str, duration: float, **kwargs) -> None:
    if event.startswith("/jax/core/compile/"):
        _totals[(event.rsplit("/", 1)[-1], str(kwargs.get("fun_name", "?")), _current["test"])] += duration


def pytest_configure(config):
    import jax

    jax.monitoring.register_event_duration_secs_listener(_listen)


def pytest_runtest_setup(item):
    _current["test"] = item.nodeid


def pytest_sessionfinish(session):
    folder = os.environ.get("TTSCALE_COMPILE_PROFILE")
    if not folder or not _totals:
        return
    os.makedirs(folder, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(folder, f"compile_{worker}.json"), "w") as fh:
        json.dump([[*key, value] for key, value in _totals.items()], fh)


def is_eager_operation(name: str) -> bool:
    """``jit(multiply)``, ``jit(_einsum)``, ...: a single operation dispatched outside ``jit``."""
    import jax
    import jax.numpy as jnp

    op = name[4:-1] if name.startswith("jit(") and name.endswith(")") else name
    return op not in ("scan", "while", "cond") and (hasattr(jax.lax, op) or hasattr(jnp, op.lstrip("_")))


def summarise(folder: str, top: int = 15) -> dict:
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "compile_*.json"))):
        with open(path) as fh:
            rows += json.load(fh)
    by_event, by_program, by_test, eager_by_test = (collections.defaultdict(float) for _ in range(4))
    eager = 0.0
    for event, name, test, seconds in rows:
        by_event[event] += seconds
        by_program[name] += seconds
        by_test[test] += seconds
        if is_eager_operation(name):
            eager += seconds
            eager_by_test[test] += seconds
    total = sum(by_event.values())
    print(f"compile events in the test processes: {total:.1f} s  " +
          "  ".join(f"{e} {s:.1f} s" for e, s in sorted(by_event.items(), key=lambda x: -x[1])))
    print(f"single operations run eagerly: {eager:.1f} s ({100 * eager / max(total, 1e-9):.0f} %)")
    for title, table in (("programs", by_program), ("tests", by_test), ("tests by eager operations", eager_by_test)):
        print(f"largest {title}:")
        for name, seconds in sorted(table.items(), key=lambda x: -x[1])[:top]:
            print(f"  {seconds:7.2f} s  {name}")
    return {"total_s": total, "eager_s": eager, "by_event": dict(by_event), "eager_by_test": dict(eager_by_test)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    summarise(sys.argv[1])
