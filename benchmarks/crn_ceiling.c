/* A hand-tiled AVX2/FMA kernel of sweep-A's common-random-numbers CoT: the ceiling that benchmarks/crn_ceiling.py
 * measures the engine's XLA-compiled kernel against. Not part of ttscale: the package runs only what JAX compiles.
 *
 * For prompts p = 0..B-1 and cells g = 0..G-1 sharing S_Z[p] ([D, D], symmetric), iterate the diagonal pseudo-Newton
 * error map of ttscale.models.pseudo_newton on u = A e,
 *
 *     u_{k+1}[i, g] = u_k[i, g] - q[i, g] * sum_j S_Z[p, i, j] u_k[j, g],    k = 0..K-1,
 *
 * and write err[p, k, g] = sum_i u_{k+1}[i, g]^2 inv_a2[i, g] + fixed[p, g] for k = 0..K-1 (the errors of steps 1..K).
 * Layouts (row-major, float32): S [B, D, D], u0 [B, D, G], q and inv_a2 [D, G], fixed [B, G], err [B, K, G].
 * D must be a multiple of 5 and G of 16 (the caller pads with zero rows and cells, which stay zero). Each prompt's
 * state (D x G floats) and product (D x G) stay in L1; the product is tiled 5 rows x 16 cells: per j, two vector
 * loads of u, five broadcasts of S_Z and ten FMAs into ten accumulators (4 rows x 16 cells measured ~15 % slower).
 */
#include <immintrin.h>
#include <stdlib.h>

void crn_errors(int B, int D, int G, int K, const float *S, const float *u0, const float *q, const float *inv_a2,
                const float *fixed, float *err) {
    float *U = aligned_alloc(32, sizeof(float) * (size_t)D * G);
    float *R = aligned_alloc(32, sizeof(float) * (size_t)D * G);
    for (int p = 0; p < B; p++) {
        const float *Sp = S + (size_t)p * D * D;
        for (int x = 0; x < D * G; x++) U[x] = u0[(size_t)p * D * G + x];
        for (int k = 0; k < K; k++) {
            for (int i = 0; i < D; i += 5) {
                for (int g = 0; g < G; g += 16) {
                    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
                    __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00;
                    for (int j = 0; j < D; j++) {
                        __m256 v0 = _mm256_load_ps(U + j * G + g), v1 = _mm256_load_ps(U + j * G + g + 8);
                        __m256 s0 = _mm256_broadcast_ss(Sp + (i + 0) * D + j);
                        __m256 s1 = _mm256_broadcast_ss(Sp + (i + 1) * D + j);
                        __m256 s2 = _mm256_broadcast_ss(Sp + (i + 2) * D + j);
                        __m256 s3 = _mm256_broadcast_ss(Sp + (i + 3) * D + j);
                        __m256 s4 = _mm256_broadcast_ss(Sp + (i + 4) * D + j);
                        a00 = _mm256_fmadd_ps(s0, v0, a00); a01 = _mm256_fmadd_ps(s0, v1, a01);
                        a10 = _mm256_fmadd_ps(s1, v0, a10); a11 = _mm256_fmadd_ps(s1, v1, a11);
                        a20 = _mm256_fmadd_ps(s2, v0, a20); a21 = _mm256_fmadd_ps(s2, v1, a21);
                        a30 = _mm256_fmadd_ps(s3, v0, a30); a31 = _mm256_fmadd_ps(s3, v1, a31);
                        a40 = _mm256_fmadd_ps(s4, v0, a40); a41 = _mm256_fmadd_ps(s4, v1, a41);
                    }
                    _mm256_store_ps(R + (i + 0) * G + g, a00); _mm256_store_ps(R + (i + 0) * G + g + 8, a01);
                    _mm256_store_ps(R + (i + 1) * G + g, a10); _mm256_store_ps(R + (i + 1) * G + g + 8, a11);
                    _mm256_store_ps(R + (i + 2) * G + g, a20); _mm256_store_ps(R + (i + 2) * G + g + 8, a21);
                    _mm256_store_ps(R + (i + 3) * G + g, a30); _mm256_store_ps(R + (i + 3) * G + g + 8, a31);
                    _mm256_store_ps(R + (i + 4) * G + g, a40); _mm256_store_ps(R + (i + 4) * G + g + 8, a41);
                }
            }
            float *e = err + ((size_t)p * K + k) * G;
            for (int g = 0; g < G; g++) e[g] = fixed[(size_t)p * G + g];
            for (int i = 0; i < D; i++) {
                for (int g = 0; g < G; g++) {
                    float v = U[i * G + g] - q[i * G + g] * R[i * G + g];
                    U[i * G + g] = v;
                    e[g] += v * v * inv_a2[i * G + g];
                }
            }
        }
    }
    free(U);
    free(R);
}
