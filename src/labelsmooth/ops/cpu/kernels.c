/* Row kernel of the fused label-smoothed cross-entropy on CPU (float32 and bfloat16 logits).
 *
 * Built at first use by labelsmooth/ops/cpu_kernel.py with the system C compiler and loaded
 * with ctypes; the Python side validates every pointer, shape and index before calling.
 * Plain C99 plus `#pragma omp simd` (compiled with -fopenmp-simd: vectorization only, no
 * OpenMP runtime), so the compiler vectorizes every loop for the machine it runs on.
 *
 * Per row i with logits x (C,), target y, and per-row coefficients g_p, g_a, g_y (see the
 * docstring of labelsmooth/ops/rowmath.py; the reduction's scale is already folded in).
 * Rows with y < 0 are ignored rows: neutral statistics (m = 0, s = 1, d_y = 0, S = 0) and a
 * zero gradient, whatever their logits hold:
 *
 *   m   = max_k x_k                       s  = sum_k exp(x_k - m)     (lse = m + log s)
 *   d_y = x[y] - m                        S  = sum_{a_k != 0} a_k (x_k - m)   (a = w * u)
 *   grad_k = g_p * exp(x_k - m) / s  -  g_a * a_k  -  g_y * [k == y]
 *
 * Three sweeps over a row while it sits in cache: (1) the max, (2) the exponentials and S, summed
 * and stored into a float32 row (the gradient row itself for float32, else a caller-provided
 * work row of C floats), (3) the scaling of that row, written into the gradient in its dtype.
 * The logits are read from memory once and the gradient written once; exp is evaluated once
 * per element; all arithmetic is float32 (sums: float32 lanes, chunks added in float64). The
 * gradient row may alias the logits row (in-place backward): x[y] is read before sweep 2, and
 * every sweep reads element k before writing element k.
 * Statistics are relative to the row max, so a common offset of the logits loses nothing.
 *
 * The four statistics (m, s, d_y, S) are what a chunked or vocabulary-parallel caller combines
 * (labelsmooth.ops.rowmath.combine).
 */
#include <math.h>
#include <stdint.h>

/* Elements per partial sum (see ls_rows_f32). */
#define LS_CHUNK 1024

/* exp(x) in float32 for x <= 0 (the argument is always x_k - max). Cody-Waite reduction
 * x = n*ln2 + r with |r| <= ln2/2 (ln2 split into an exact high part and a correction), a
 * degree-6 polynomial for exp(r) (the Cephes expf coefficients), and 2^n built in the exponent
 * bits. Relative error about 2 ulp; results below float32's normal range (x < -87.33) are
 * flushed to 0, NaN propagates. */
static inline float ls_expf(float x) {
    const float lo_cut = -87.336544f; /* log(FLT_MIN): 2^n stays a normal number above */
    float xc = x < lo_cut ? lo_cut : x;
    float n = __builtin_rintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } two_n;
    two_n.i = ((int32_t)n + 127) << 23;
    float e = p * two_n.f;
    e = x < lo_cut ? 0.0f : e;
    return x != x ? x : e;
}

/* bfloat16 <-> float32: bf16 is the high half of a float32. Stores round to nearest even;
 * NaN stays a (quiet) NaN. */
static inline float ls_from_bf16(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

static inline uint16_t ls_to_bf16(float f) {
    union {
        uint32_t u;
        float f;
    } v;
    v.f = f;
    const uint32_t rounded = (v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16;
    const uint32_t nan = (v.u >> 16) | 0x40u;
    return (uint16_t)((v.u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

#define LS_LOAD_F32(p, k) ((p)[k])
#define LS_STORE_F32(p, k, v) ((p)[k] = (v))
#define LS_LOAD_BF16(p, k) ls_from_bf16((p)[k])
#define LS_STORE_BF16(p, k, v) ((p)[k] = ls_to_bf16(v))

/* One chunk [k0, k1) of sweep 2 of LS_DEFINE_ROWS (which names the variables it uses):
 * part += e_k and part_S += TERM (an expression of d = x_k - shift and k), with e_k kept in
 * er when KEEP_E. KEEP_E is a constant and TERM fixed per call, so each of the four calls
 * compiles to its own branch-free vector loop. */
#define LS_SWEEP2_CHUNK(LOAD, KEEP_E, TERM)                                                    \
    _Pragma("omp simd reduction(+ : part, part_S)")                                            \
    for (int64_t k = k0; k < k1; ++k) {                                                        \
        const float d = LOAD(xr, k) - shift;                                                   \
        const float e = ls_expf(d);                                                            \
        if (KEEP_E) er[k] = e;                                                                 \
        part += e;                                                                             \
        part_S += (TERM);                                                                      \
    }

/* Statistics (and, if g is not NULL, the gradient) of M rows of C logits of type T.
 *
 *   x, ldx      logits, row i at x + i*ldx (unit stride within a row)
 *   g, ldg      gradient rows (may equal x), or NULL for statistics only
 *   work        C floats of scratch (only for T other than float, when g is not NULL)
 *   y           (M,) target indices, each in [0, C), or -1 for an ignored row (its
 *               logits are not read)
 *   a, lda, a0  a_k = w_k u_k: row i reads a + y[i]*lda (lda = 0: one (C,) vector for every
 *               row; lda = C: the (C, C) matrix of a class-conditional prior, row y for
 *               target y), or a = NULL when a_k = a0 for every k
 *   gp, ga, gy  (M,) gradient coefficients (read only when g is not NULL)
 *   m_out, s_out, dy_out, S_out   (M,) float32 statistics
 */
#define LS_DEFINE_ROWS(NAME, T, LOAD, STORE, IN_PLACE_E)                                       \
    void NAME(int64_t M, int64_t C, const T *x, int64_t ldx, T *g, int64_t ldg, float *work,    \
              const int64_t *y, const float *a_base, int64_t lda, float a0, const float *gp,    \
              const float *ga, const float *gy, float *m_out, float *s_out, float *dy_out,      \
              float *S_out) {                                                                  \
        for (int64_t i = 0; i < M; ++i) {                                                      \
            const T *xr = x + i * ldx;                                                         \
            T *gr = g ? g + i * ldg : 0;                                                       \
            const int64_t yi = y[i];                                                           \
            if (yi < 0) {                                                                      \
                /* ignored row: neutral statistics and a zero gradient, row never read */      \
                if (gr) {                                                                      \
                    _Pragma("omp simd")                                                        \
                    for (int64_t k = 0; k < C; ++k) STORE(gr, k, 0.0f);                        \
                }                                                                              \
                m_out[i] = 0.0f;                                                               \
                s_out[i] = 1.0f;                                                               \
                dy_out[i] = 0.0f;                                                              \
                S_out[i] = 0.0f;                                                               \
                continue;                                                                      \
            }                                                                                  \
            /* this row's a: the vector, or row y of the (C, C) matrix (lda = C) */            \
            const float *a = a_base ? a_base + yi * lda : 0;                                   \
            /* where sweep 2 keeps exp(x - m): the float32 gradient row, or the work row */    \
            float *er = gr ? (IN_PLACE_E ? (float *)(void *)gr : work) : 0;                    \
            const float xy = LOAD(xr, yi);                                                     \
            float m = -INFINITY;                                                               \
            /* sweep 1: the row max (a NaN logit reaches the results through s and S) */       \
            _Pragma("omp simd reduction(max : m)")                                             \
            for (int64_t k = 0; k < C; ++k) {                                                  \
                const float v = LOAD(xr, k);                                                   \
                m = v > m ? v : m;                                                             \
            }                                                                                  \
            /* a row of -inf only (every class masked) would give (-inf) - (-inf) = NaN */     \
            const float shift = isinf(m) && m < 0 ? 0.0f : m;                                  \
            /* sweep 2: e_k = exp(x_k - m) (kept in er, if any), s = sum_k e_k, and            \
             * S = sum_k a_k (x_k - m) relative to the max (exact at any common offset),       \
             * skipping a_k = 0 (0 * -inf would be NaN). Sums run in float32 vector lanes      \
             * over chunks of LS_CHUNK elements and add up the chunks in float64, so their     \
             * error stays near float32 rounding even for C in the hundreds of thousands. */   \
            double S = 0.0, s = 0.0;                                                           \
            for (int64_t k0 = 0; k0 < C; k0 += LS_CHUNK) {                                     \
                const int64_t k1 = k0 + LS_CHUNK < C ? k0 + LS_CHUNK : C;                      \
                float part = 0.0f, part_S = 0.0f;                                              \
                if (er && a) {                                                                 \
                    LS_SWEEP2_CHUNK(LOAD, 1, a[k] != 0.0f ? a[k] * d : 0.0f)                   \
                } else if (er) {                                                               \
                    LS_SWEEP2_CHUNK(LOAD, 1, d)                                                \
                } else if (a) {                                                                \
                    LS_SWEEP2_CHUNK(LOAD, 0, a[k] != 0.0f ? a[k] * d : 0.0f)                   \
                } else {                                                                       \
                    LS_SWEEP2_CHUNK(LOAD, 0, d)                                                \
                }                                                                              \
                s += part;                                                                     \
                S += part_S;                                                                   \
            }                                                                                  \
            if (!a) S *= a0;                                                                   \
            if (gr) {                                                                          \
                /* sweep 3: grad_k = (g_p / s) e_k - g_a a_k - g_y [k == y], one rounding */   \
                const float c = (float)(gp[i] / s), d = ga[i];                                 \
                const float e_y = er[yi];                                                      \
                if (a) {                                                                       \
                    _Pragma("omp simd")                                                        \
                    for (int64_t k = 0; k < C; ++k) STORE(gr, k, er[k] * c - d * a[k]);        \
                } else {                                                                       \
                    const float da = d * a0;                                                   \
                    _Pragma("omp simd")                                                        \
                    for (int64_t k = 0; k < C; ++k) STORE(gr, k, er[k] * c - da);              \
                }                                                                              \
                const float a_y = a ? a[yi] : a0;                                              \
                STORE(gr, yi, e_y * c - d * a_y - gy[i]);                                      \
            }                                                                                  \
            m_out[i] = shift;                                                                  \
            s_out[i] = (float)s;                                                               \
            dy_out[i] = xy - shift;                                                            \
            S_out[i] = (float)S;                                                               \
        }                                                                                      \
    }

LS_DEFINE_ROWS(ls_rows_f32, float, LS_LOAD_F32, LS_STORE_F32, 1)
LS_DEFINE_ROWS(ls_rows_bf16, uint16_t, LS_LOAD_BF16, LS_STORE_BF16, 0)
/* float16 is left to the caller (a float32 block buffer): GCC 12 converts _Float16 one
 * element at a time through libgcc, which measured 5x slower than the buffer. */

