"""First-call cost of the functional API outside ``jit``: what a researcher pays in a notebook.

Times, in one fresh process, the first call (tracing + compiling + running) and a warm second call of
the public samplers and closed forms on a small case (d = 8, 4096 prompts of length 40). Each public
function is compiled as one program per shape; before that change each JAX operation inside it was
compiled on first use. Run it against another tree with ``PYTHONPATH=TREE python benchmarks/first_calls.py``.

    python benchmarks/first_calls.py [--d 8] [--m 40] [--batch 4096] [--json]   (or: ttscale bench first-calls)
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--m", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    ap.add_argument("--quick", action="store_true", help="a smoke test: d = 4, m = 8, 64 prompts")
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.m, args.batch = 4, 8, 64
    t0 = time.perf_counter()
    import jax

    import ttscale as tts

    t_import = time.perf_counter() - t0
    d, m, b = args.d, args.m, args.batch
    key = jax.random.key(0)
    state = {}
    steps = {
        "power_law": lambda: state.setdefault("cov", tts.power_law(d, 1.0)),
        "rotated": lambda: state.setdefault("rot", tts.rotated(jax.random.key(1), state["cov"])),
        "gamma_inverse": lambda: state.setdefault("P", tts.gamma_inverse(state["rot"], 20)),
        "params_from_preconditioner": lambda: tts.params_from_preconditioner(state["P"], 1.0),
        "sample_prompts": lambda: tts.sample_prompts(key, state["rot"], m, b),
        "sample_statistics": lambda: tts.sample_statistics(key, state["rot"], m, b),
        "pseudo_newton_errors": lambda: tts.pseudo_newton_errors(state["P"], tts.sample_prompts(key, state["rot"], m, b), 16),
        "limit_error": lambda: tts.limit_error(state["P"], state["rot"], 16),
        "one_step_error": lambda: tts.one_step_error(state["P"], state["rot"], m),
    }
    rows = {}
    for name, fn in steps.items():
        times = []
        for _ in range(2):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t)
        rows[name] = {"first_s": round(times[0], 4), "warm_s": round(times[1], 4)}
    total = sum(r["first_s"] for r in rows.values())
    out = {"import_s": round(t_import, 3), "first_calls_total_s": round(total, 3), "rows": rows,
           "jax": jax.__version__, "ttscale": tts.__file__}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"import jax + ttscale: {t_import:.2f} s   ({tts.__file__})")
        print(f"{'function':28s} {'first call s':>12s} {'warm s':>8s}")
        for name, r in rows.items():
            print(f"{name:28s} {r['first_s']:12.3f} {r['warm_s']:8.4f}")
        print(f"{'total of first calls':28s} {total:12.3f}")
    return out


if __name__ == "__main__":
    main()
