"""Random-number options for the statistics sampler, one device: XLA's Threefry vs Philox bits, erfinv vs
Box–Muller normals (with XLA's ``cos``/``sin``, or with the angle reduced exactly from the word's bits and two short
polynomials), and the Bartlett diagonal's χ² draws.

    python benchmarks/rng_transforms.py [--repeats 3]

Each figure: 80 cells × 2048 prompts × 230 numbers (sweep-A's Bartlett draw at d = 20: 190 below-diagonal
normals, 20 for w, 20 for the χ² candidates), best of ``--repeats``; the χ² line draws sweep-A's 20 diagonal
``χ²_{40}, …, χ²_{21}`` per prompt (:func:`ttscale.prompts.chi_squares`, rejections retried) for 80 cells × 4096
prompts in draw blocks of 256, as the engine does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
from ttscale import prompts, rng

COUNT, CELLS, WIDTH = 2048, 80, 230


def bits(algorithm):
    @jax.jit
    def run(keys):
        def one(k):
            state = jnp.concatenate([jax.random.key_data(k).astype(jnp.uint32), jnp.zeros(2, jnp.uint32)])
            words = jax.lax.rng_bit_generator(state, (COUNT * WIDTH,), dtype=jnp.uint32, algorithm=algorithm)[1]
            return jnp.sum(words.reshape(COUNT, WIDTH), axis=0)
        return jax.lax.map(one, keys)
    return run


def normals(kind):
    @jax.jit
    def run(keys):
        def one(k):
            words = prompts._prompt_words(k, 0, COUNT, WIDTH, 3)
            if kind == "erfinv":
                return jnp.sum(rng.words_to_normal(words, jnp.float32), axis=0)
            u = prompts._words_to_uniform(words[:, :WIDTH // 2], jnp.float32)
            r = jnp.sqrt(-2 * jnp.log(u))
            if kind == "box_muller":
                t = np.float32(2 * np.pi) * prompts._words_to_uniform(words[:, WIDTH // 2:], jnp.float32)
                return jnp.sum(r * jnp.cos(t), axis=0) + jnp.sum(r * jnp.sin(t), axis=0)
            cos, sin = _turn(words[:, WIDTH // 2:])
            return jnp.sum(r * cos, axis=0) + jnp.sum(r * sin, axis=0)
        return jax.lax.map(one, keys)
    return run


def _turn(words):
    """``(cos θ, sin θ)`` of ``θ = 2π v``, ``v`` from the top 23 bits of a word, reduced exactly: the top 3 bits are the
    octant ``o``, the other 20 give ``φ = (π/4)(t + ½)2^{-20}``, and ``θ = oπ/4 + φ`` by Taylor polynomials of ``φ``
    (to ``φ⁹``, ``φ⁸``; error below 1e-8 on ``[0, π/4]``) rotated by the octant's exact cosine and sine."""
    b = words >> 9
    o = b >> 20
    phi = ((b & 0xFFFFF).astype(jnp.float32) + 0.5) * np.float32(np.pi / 4 * 2.0**-20)
    p2 = phi * phi
    s = phi * (1 + p2 * (-1 / 6 + p2 * (1 / 120 + p2 * (-1 / 5040 + p2 / 362880))))
    c = 1 + p2 * (-0.5 + p2 * (1 / 24 + p2 * (-1 / 720 + p2 / 40320)))
    ca = jnp.asarray(np.cos(np.arange(8) * np.pi / 4), jnp.float32)[o]
    sa = jnp.asarray(np.sin(np.arange(8) * np.pi / 4), jnp.float32)[o]
    return ca * c - sa * s, sa * c + ca * s


def chi_squares():
    dofs = 40 - np.arange(20)
    block = 256

    @jax.jit
    def run(keys):
        def one(k):
            blocks = jnp.arange(2 * COUNT // block, dtype=jnp.uint32) * block
            return jax.lax.map(lambda start: jnp.sum(prompts.chi_squares(k, start, block, dofs), axis=0), blocks).sum(0)
        return jax.lax.map(one, keys)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    keys = jax.random.split(jax.random.key(0), CELLS)
    A = jax.lax.RandomAlgorithm
    print(f"# {CELLS} cells x {COUNT} prompts x {WIDTH} numbers, one device, best of {args.repeats}")
    for label, fn in (("Threefry words (the sampler's): ", bits(A.RNG_THREE_FRY)), ("Philox words:                   ", bits(A.RNG_PHILOX)),
                      ("normals, erfinv (the sampler's):", normals("erfinv")), ("normals, Box-Muller:            ", normals("box_muller")),
                      ("normals, Box-Muller, exact octant reduction:", normals("box_muller_octant")),
                      ("chi-squares, 20 per prompt, 4096 prompts:", chi_squares())):
        print(f"{label} {bc.best_warm_seconds(lambda: fn(keys), args.repeats):.3f} s")


if __name__ == "__main__":
    main()
