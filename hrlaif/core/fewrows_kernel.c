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
#include <math.h>
#include <stdint.h>

#define PREFETCH_FLOATS 2048 /* 8 KB ahead of the load */

#define ROW(i) a##i = _mm256_fmadd_ps(_mm256_broadcast_ss(x + (i) * ldx + j), w, a##i)

/* y[i][0..8) = sum_j x[i][j] * pw[j * ldw + 0..8) for the 8 rows i of x (row stride ldx). */
static void block8(const float *x, int64_t ldx, int64_t k, const float *pw, int64_t ldw, float *y, int64_t ldy) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t j = 0; j < k; j++) {
        if (ldw == 8 && !(j & 1))
            _mm_prefetch((const char *)(pw + j * 8 + PREFETCH_FLOATS), _MM_HINT_T0);
        __m256 w = _mm256_loadu_ps(pw + j * ldw);
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
            block8(x + r * k, k, k, packed + b * k * 8, 8, y + r * n + b * 8, n);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * One decode step's attention over a prefix shared by every row plus each row's own keys
 * (hrlaif/core/prefix_attention.py), one call per layer:
 *
 *   scores[h][r][c] = scale * q_h[r] . key_c + mask[b][c]  r = b * g + i (query head h * g + i of row b);
 *                     c < P the prefix's keys (packed like a weight: fewrows_pack), c = P8 + j row b's
 *                     own key j (P8 = P rounded up to 8; columns P..P8 are -inf)
 *   probs           = softmax over c, in fp32 (exp: Cephes' polynomial, within 2 ulp; -inf gives 0)
 *   out[b][h*g+i]   = sum_c<P probs[c] vp[h][c] + sum_j probs[P8 + j] v[b][h][j]
 *
 * The prefix is read once for all rows (8 query rows at a time through block8); the rows' own keys
 * and values once each. query: row b, head hq at q + b * qsb + hq * qsh (d contiguous); own k/v: row
 * b, kv head h at base + b * sb + h * sh, [S][d] rows contiguous; mask: additive, row b at mask + b *
 * ms (ms = 0: one row for all), or NULL; out: [B][H][d]; scratch: attn_scratch_floats() floats.
 * d must be a multiple of 8.
 */
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 live = _mm256_cmp_ps(x, lo, _CMP_GE_OQ); /* below: 0 (and -inf is exactly 0) */
    x = _mm256_max_ps(x, lo);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, x), x, x), _mm256_set1_ps(1.0f));
    __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(n)), live);
}

/* softmax of row s[0..w) in place; w is a multiple of 8 */
static void softmax_row(float *s, int64_t w) {
    __m256 mx = _mm256_set1_ps(-__builtin_inff());
    for (int64_t c = 0; c < w; c += 8)
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + c));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    __m256 m = _mm256_set1_ps(_mm_cvtss_f32(m4)), sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < w; c += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + c), m));
        _mm256_storeu_ps(s + c, e);
        sum = _mm256_add_ps(sum, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
    for (int64_t c = 0; c < w; c += 8)
        _mm256_storeu_ps(s + c, _mm256_mul_ps(_mm256_loadu_ps(s + c), inv));
}

static int64_t up8(int64_t n) { return (n + 7) / 8 * 8; }

int64_t attn_scratch_floats(int64_t kvh, int64_t B, int64_t g, int64_t d, int64_t P, int64_t S) {
    int64_t R8 = up8(B * g);
    return kvh * R8 * (2 * d + up8(P) + up8(S));
}

int attn_step(const float *q, int64_t qsb, int64_t qsh, int64_t kvh, int64_t B, int64_t g, int64_t d,
              const float *kp_packed, const float *vp, int64_t P, const float *k, const float *v, int64_t S,
              int64_t sb, int64_t sh, const float *mask, int64_t ms, float scale, float *out, float *scratch,
              int threads) {
    if (d % 8)
        return 1;
    int64_t R = B * g, R8 = up8(R), P8 = up8(P), W = P8 + up8(S), kb = P8 / 8, rb = R8 / 8, db = d / 8;
    float *qb = scratch, *ob = scratch + kvh * R8 * d, *sc = ob + kvh * R8 * d;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t r = 0; r < R8; r++)
                for (int64_t t = 0; t < d; t++)
                    qb[(h * R8 + r) * d + t] = r < R ? q[(r / g) * qsb + (h * g + r % g) * qsh + t] : 0.0f;
        #pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t b = 0; b < kb; b++)
                for (int64_t r = 0; r < rb; r++)
                    block8(qb + (h * R8 + r * 8) * d, d, d, kp_packed + (h * kb + b) * d * 8, 8,
                           sc + (h * R8 + r * 8) * W + b * 8, W);
        #pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t r = 0; r < R8; r++) {
                float *sr = sc + (h * R8 + r) * W;
                if (r >= R) {
                    for (int64_t c = 0; c < W; c++)
                        sr[c] = 0.0f;
                    continue;
                }
                int64_t bb = r / g;
                const float *m = mask ? mask + bb * ms : 0, *qr = qb + (h * R8 + r) * d, *kr = k + bb * sb + h * sh;
                for (int64_t c = 0; c < P; c++)
                    sr[c] = sr[c] * scale + (m ? m[c] : 0.0f);
                for (int64_t j = 0; j < S; j++) {
                    const float *kj = kr + j * d;
                    __m256 acc = _mm256_setzero_ps();
                    for (int64_t t = 0; t < d; t += 8)
                        acc = _mm256_fmadd_ps(_mm256_loadu_ps(qr + t), _mm256_loadu_ps(kj + t), acc);
                    sr[P8 + j] = hsum(acc) * scale + (m ? m[P + j] : 0.0f);
                }
                for (int64_t c = P; c < P8; c++)
                    sr[c] = -__builtin_inff();
                for (int64_t c = P8 + S; c < W; c++)
                    sr[c] = -__builtin_inff();
                softmax_row(sr, W);
            }
        #pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t t = 0; t < db; t++)
                for (int64_t r = 0; r < rb; r++)
                    block8(sc + (h * R8 + r * 8) * W, W, P, vp + h * P * d + t * 8, d, ob + (h * R8 + r * 8) * d + t * 8,
                           d);
        #pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t r = 0; r < R; r++) {
                int64_t bb = r / g;
                const float *vr = v + bb * sb + h * sh, *pr = sc + (h * R8 + r) * W + P8;
                const float *o = ob + (h * R8 + r) * d;
                float *dst = out + (bb * kvh * g + h * g + r % g) * d;
                for (int64_t t = 0; t < d; t += 8) {
                    __m256 acc = _mm256_loadu_ps(o + t);
                    for (int64_t j = 0; j < S; j++)
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(pr[j]), _mm256_loadu_ps(vr + j * d + t), acc);
                    _mm256_storeu_ps(dst + t, acc);
                }
            }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * A Llama decoder layer's decode step around its attention, in two calls (hrlaif/core/decode_step.py):
 *
 *   layer_qkv:  x = rmsnorm(h) * w1;  q, k, v = x Wq^T, x Wk^T, x Wv^T;  rotary on q and k
 *   layer_out:  h += a Wo^T;  x = rmsnorm(h) * w2;  h += (silu(x Wg^T) * (x Wu^T)) Wd^T
 *
 * fp32 throughout, as transformers' LlamaRMSNorm / LlamaMLP / apply_rotary_pos_emb compute it (to
 * the last bits: sums in another order, exp to 2 ulp). Weights packed by fewrows_pack; h: [rows][D]
 * with rows a multiple of 8 (spare rows zero); cos/sin: [rows][d]; q: [rows][H][d], k/v: [rows][kvh][d];
 * scratch: layer_scratch_floats() floats.
 */
static void rmsnorm_rows(const float *h, int64_t rows, int64_t D, const float *w, float eps, float *x) {
    #pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *hr = h + r * D;
        float ss = 0.0f;
        for (int64_t c = 0; c < D; c++)
            ss += hr[c] * hr[c];
        float inv = 1.0f / sqrtf(ss / (float)D + eps);
        for (int64_t c = 0; c < D; c++)
            x[r * D + c] = w[c] * (hr[c] * inv);
    }
}

/* y[rows][n] (row stride ldy) = x[rows][k] @ W^T for every 8-output block; omp-shared loop */
static void products(const float *x, int64_t rows, int64_t k, const float *packed, int64_t n, float *y, int64_t ldy) {
    #pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < n / 8; b++)
        for (int64_t r = 0; r < rows; r += 8)
            block8(x + r * k, k, k, packed + b * k * 8, 8, y + r * ldy + b * 8, ldy);
}

int64_t layer_scratch_floats(int64_t rows, int64_t D, int64_t I) { return rows * (D + 2 * I); }

int layer_qkv(const float *h, int64_t rows, int64_t D, const float *w1, float eps, const float *wq, const float *wk,
              const float *wv, int64_t H, int64_t kvh, int64_t d, const float *cos, const float *sin, float *q, float *k,
              float *v, float *scratch, int threads) {
    if (rows % 8 || d % 2 || (H * d) % 8 || (kvh * d) % 8)
        return 1;
    float *x = scratch;
    int64_t half = d / 2;
    #pragma omp parallel num_threads(threads)
    {
        rmsnorm_rows(h, rows, D, w1, eps, x);
        products(x, rows, D, wq, H * d, q, H * d);
        products(x, rows, D, wk, kvh * d, k, kvh * d);
        products(x, rows, D, wv, kvh * d, v, kvh * d);
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *c = cos + r * d, *s = sin + r * d;
            for (int64_t hh = 0; hh < H + kvh; hh++) {
                float *t = hh < H ? q + (r * H + hh) * d : k + (r * kvh + hh - H) * d;
                for (int64_t i = 0; i < half; i++) {
                    float a = t[i], b = t[i + half];
                    t[i] = a * c[i] + (-b) * s[i];
                    t[i + half] = b * c[i + half] + a * s[i + half];
                }
            }
        }
    }
    return 0;
}

int layer_out(const float *a, float *h, int64_t rows, int64_t D, int64_t I, const float *wo, const float *w2, float eps,
              const float *wg, const float *wu, const float *wd, float *scratch, int threads) {
    if (rows % 8 || D % 8 || I % 8)
        return 1;
    float *x = scratch, *g = scratch + rows * D, *u = g + rows * I;
    #pragma omp parallel num_threads(threads)
    {
        products(a, rows, D, wo, D, x, D);
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < rows * D; i++)
            h[i] = h[i] + x[i];
        rmsnorm_rows(h, rows, D, w2, eps, x);
        products(x, rows, D, wg, I, g, I);
        products(x, rows, D, wu, I, u, I);
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < rows * I; i += 8) {
            __m256 gv = _mm256_loadu_ps(g + i);
            __m256 sg = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
            _mm256_storeu_ps(g + i, _mm256_mul_ps(sg, _mm256_loadu_ps(u + i)));
        }
        products(g, rows, I, wd, D, x, D);
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t i = 0; i < rows * D; i++)
            h[i] = h[i] + x[i];
    }
    return 0;
}
