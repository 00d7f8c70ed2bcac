/* y[M, N] = x[M, K] @ W^T for decoding's few rows, fp32, AVX2 + FMA (hrlaif/core/fewrows.py).
 *
 * A decode step multiplies every weight matrix by a few rows, so its time is the time to stream the
 * weights from memory. W is packed once per generate call as [N/8][K][8] (eight output rows
 * interleaved), so the kernel reads it front to back in one pass: each 32-byte load of 8 weights
 * feeds 8 FMAs, one per row of x (a broadcast from L1), into 8 accumulators of 8 outputs each. More
 * than 8 rows re-read the 18-KB block from L1/L2, not from memory. Each (row, output) sums over k in
 * order 0..K-1 in one fp32 accumulator (FMA: one rounding per term).
 *
 * The software prefetch ahead of the stream is what reaches the memory bandwidth: without it one
 * core streamed 6.7 GB/s against 11 for a plain sum (AMX Xeon held to AVX2; with it 9-10).
 */
#include <immintrin.h>
#include <stdint.h>

#define PREFETCH_FLOATS 2048 /* 8 KB ahead of the load */

#define ROW(i) a##i = _mm256_fmadd_ps(_mm256_broadcast_ss(x + (i) * k + j), w, a##i)

static void block8(const float *x, int64_t k, const float *pw, float *y, int64_t ldy) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t j = 0; j < k; j++) {
        if (!(j & 1))
            _mm_prefetch((const char *)(pw + j * 8 + PREFETCH_FLOATS), _MM_HINT_T0);
        __m256 w = _mm256_loadu_ps(pw + j * 8);
        ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
    }
    _mm256_storeu_ps(y, a0);
    _mm256_storeu_ps(y + ldy, a1);
    _mm256_storeu_ps(y + 2 * ldy, a2);
    _mm256_storeu_ps(y + 3 * ldy, a3);
    _mm256_storeu_ps(y + 4 * ldy, a4);
    _mm256_storeu_ps(y + 5 * ldy, a5);
    _mm256_storeu_ps(y + 6 * ldy, a6);
    _mm256_storeu_ps(y + 7 * ldy, a7);
}

/* packed[b][j][r] = w[8b + r][j] for w: [n, k] contiguous, n a multiple of 8 (the layout above). */
int fewrows_pack(const float *w, int64_t n, int64_t k, float *packed, int threads) {
    if (n % 8 || k <= 0)
        return 1;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < n / 8; b++) {
        const float *src = w + b * 8 * k;
        float *dst = packed + b * 8 * k;
        for (int64_t j = 0; j < k; j++)
            for (int r = 0; r < 8; r++)
                dst[j * 8 + r] = src[r * k + j];
    }
    return 0;
}

/* x: [m, k] contiguous with m a multiple of 8; packed: [n/8][k][8] with n a multiple of 8; y: [m, n]. */
int fewrows_mm(const float *x, int64_t m, int64_t k, const float *packed, int64_t n, float *y, int threads) {
    if (m % 8 || n % 8 || k <= 0)
        return 1;
    int64_t blocks = n / 8;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t r = 0; r < m; r += 8)
            block8(x + r * k, k, packed + b * k * 8, y + r * n + b * 8, n);
    return 0;
}
