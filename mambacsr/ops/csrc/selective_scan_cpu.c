/*
 * SelectiveScan on the CPU: plain C11 + OpenMP, built on first use by mambacsr/ops/scan_cpu.py.
 *
 * Contract (DESIGN.md, mambacsr_scan_order.h), for every batch b, channel c of group
 * g = c / C (c' = c % C), state n, sequence token t of group g, with h = 0 at t = 0,
 * s = source(g, t), o = target(g, t):
 *     uu, dd, BB, CC = u[b, c or c', s], delta[b,c,s], Bs[b,g,:,s], Cs[b,g,:,s]  (0 if s < 0)
 *     dt        = softplus(dd + delta_bias[c])     (no softplus if delta_softplus == 0)
 *     h[n]      = exp(dt * A[c,n]) * h[n] + dt * BB[n] * uu
 *     y[b,c,o]  = sum_n CC[n] * h[n] + D[c] * uu   (not stored if o < 0)
 * Layouts (all contiguous float32, storage order, length L): u (batch, K*C, L), or (batch, C, L)
 * shared by the K groups when u_shared; delta, y (batch, K*C, L); A (K*C, N); Bs, Cs
 * (batch, K, N, L); D, delta_bias (K*C,) (either may be NULL: zero).
 *
 * Work split: one work item = (batch, group, tile of up to TILE_LG lane-groups of VL = 8
 * channels of that group), spread over OpenMP threads (dynamic schedule). A lane-group's 8
 * channels are scanned together, one channel per SIMD lane: per token, for each state n,
 *     a = exp(dt[lanes] * A[lanes, n]); h[n] = a * h[n] + dt*u[lanes] * B[n]; y += h[n] * C[n]
 * with B[n], C[n] broadcast (the channels share their group's B/C), so the sum over states is
 * a vector FMA chain with no horizontal reduction. Tokens go in blocks of TOKENS_PER_BLOCK: the
 * group's B/C block is transposed once per tile into token-major buffers (N floats per token,
 * hot in L1 for all the tile's lane-groups; reading the rows in place, L floats apart, would
 * put 2N lines into one L1 set); dt (softplus, vectorised over tokens) and dt*u are computed
 * row by row and transposed to lane-interleaved [token][8], y is transposed back and gets
 * D*u. With any other scan order the blocks are blocks of each group's sequence: the order's
 * source / target positions are tabulated once per call (order_tables), each row's block is
 * gathered through them (virtual tokens read 0; runs and column-first tiles with vector loads)
 * before the same transposes, y + D*u is scattered back through the targets, and the lines
 * of the next block are prefetched. Channels past the group's end are padding lanes with
 * dt = 0. Any shape works; with AVX2+FMA (x86-64 -march=native) the state loop uses
 * intrinsics with 4 interleaved exps, elsewhere a portable loop the compiler vectorises
 * (omp simd); N = 16/32/64 are specialised.
 *
 * exp: Cephes-style (range reduction by ln 2, degree-7 polynomial, <= 1.25 ulp), branch-free so
 * it vectorises; exp(x) = 0 for x < -86.99 (results below 1.7e-38), +inf for x > ln(FLT_MAX),
 * NaN stays NaN.
 * softplus: like mamba-ssm / torch (x > 20 -> x, else log1p(exp(x))), computed as
 * max(x, 0) + log1p(exp(-|x|)) with a Cephes log1p polynomial, vectorised over tokens.
 * No -ffast-math needed (scan_cpu.py adds only -ffp-contract=fast -fno-math-errno
 * -fno-trapping-math, which let the selects vectorise). Results do not depend on the thread
 * count: every channel is computed by one thread in a fixed order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mambacsr_scan_order.h"

#define MAMBACSR_SCAN_ABI 2

/* Status codes of mambacsr_scan_cpu_f32_ordered (text: mambacsr_scan_cpu_status_string). */
enum {
    SCAN_CPU_OK = 0,
    SCAN_CPU_ERR_INVALID_ARGUMENT = 1, /* bad sizes, an invalid order, int32 positions overflow */
    SCAN_CPU_ERR_NO_MEMORY = 2         /* scratch memory could not be allocated */
};
#ifndef TILE_LG
#define TILE_LG 8            /* lane-groups (of VL channels) per work item */
#endif
#ifndef TOKENS_PER_BLOCK
#define TOKENS_PER_BLOCK 128 /* tokens per block: the group's B/C block stays in L1 */
#endif
#ifndef ORDERED_TOKENS_PER_BLOCK
#define ORDERED_TOKENS_PER_BLOCK 256 /* with a scan order: a column order (c_w64) uses few floats
                                        of each cache line per block, longer blocks more */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

#if defined(_OPENMP)
#define SIMD _Pragma("omp simd")
#else
#define SIMD
#endif

typedef union { uint32_t i; float f; } f32bits;

/* exp(x) in float32 (~1 ulp), branch-free so that it vectorises.
 * x is clamped to [-87.5, 88.8]; n + 126 = round(x / ln 2) + 126 lands in the low mantissa
 * bits of t = x / ln 2 + 1.5 * 2^23 + 126; r = x - n ln 2 (Cody-Waite, two constants), |r| <= ln(2)/2;
 * 2 e^r = 2 + 2r + r^2 P(r) (Cephes expf polynomial, coefficients doubled: exact); the result
 * is 2 e^r * 2^(n-1), with the biased exponent n + 126 in [0, 254]. Measured: <= 1.25 ulp
 * for x >= -86.98; below, the exponent field is 0 and the result 0 (values under 1.7e-38 flush
 * to zero); above ln(FLT_MAX) the product overflows to +inf; NaN stays NaN. The AVX2 path
 * below computes the same thing. softplus: <= 2 ulp. */
#define EXP_LO -87.5f
#define EXP_HI 88.8f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_MAGIC 12583038.0f          /* 1.5 * 2^23 + 126: rounds, and biases the exponent */
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 3.9751383000e-4f         /* 2 x Cephes expf coefficients */
#define EXP_P1 2.7963999014e-3f
#define EXP_P2 1.66669038146e-2f
#define EXP_P3 8.3331591788e-2f
#define EXP_P4 3.3333330918e-1f
#define EXP_P5 1.00000002402f

INLINE float fast_expf(float x)
{
    float xc = x < EXP_LO ? EXP_LO : x;   /* NaN passes both tests unchanged */
    xc = xc > EXP_HI ? EXP_HI : xc;
    f32bits t, s;
    t.f = xc * EXP_LOG2E + EXP_MAGIC;
    const float n = t.f - EXP_MAGIC;
    float r = xc - n * EXP_C1;
    r = r - n * EXP_C2;
    float p = EXP_P0;
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * (r * r) + (r * 2.0f + 2.0f);  /* 2 e^r */
    s.i = t.i << 23;                        /* 2^(n-1): the high bits shift out */
    return p * s.f;
}

/* log1p(z) for z in [0, 1] (Cephes logf polynomial on [sqrt(.5)-1, sqrt(2)-1]), branch-free. */
INLINE float log1p_unit(float z)
{
    const int big = z > 0.41421356237f;
    /* 1 + z = 2^e (1 + x) with e = 1 when z is big: x = (z - 1) / 2, else x = z exactly. */
    const float xbig = (z - 1.0f) * 0.5f;  /* computed unconditionally: a select, not a branch */
    const float x = big ? xbig : z;
    const float e = big ? 1.0f : 0.0f;
    const float xx = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * xx;
    y = y + e * -2.12194440e-4f;
    y = y - 0.5f * xx;
    return (x + y) + e * 0.693359375f;
}

/* softplus with mamba-ssm's threshold: x > 20 -> x, else log1p(exp(x)). */
INLINE float softplus_f(float x)
{
    const float nx = -x;
    const float nax = x < 0.0f ? x : nx;  /* -|x| */
    const float pos = x > 0.0f ? x : 0.0f;
    const float sp = pos + log1p_unit(fast_expf(nax));
    return x > 20.0f ? x : sp;
}

/* Lanes: VL channels of one group are scanned together, one channel per SIMD lane, so the
 * sum over states is a plain vector FMA chain (no horizontal reduction) and B/C values are
 * broadcast scalars. Lanes past the group's last channel run with dt = 0 (state stays 0). */
#define VL 8

/* VL channels over one token block. Inputs are lane-interleaved: dtv/duv [t][VL], AT [n][VL],
 * h [n][VL] (carried across blocks); B/C point at the group's rows (stride L between states)
 * at the block's first token; the output yv is [t][VL]. */
INLINE void scan_lanes_generic(const int64_t N, const int64_t tb,
                       const float* restrict AT, const float* restrict Bt,
                       const float* restrict Ct, const float* restrict dtv,
                       const float* restrict duv, float* restrict h, float* restrict yv)
{
    for (int64_t t = 0; t < tb; ++t) {
        const float* restrict d = dtv + t * VL;
        const float* restrict du = duv + t * VL;
        float acc[VL];
        for (int l = 0; l < VL; ++l) acc[l] = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
            const float bn = Bt[t * N + n], cn = Ct[t * N + n];
            const float* restrict an = AT + n * VL;
            float* restrict hn = h + n * VL;
            SIMD
            for (int l = 0; l < VL; ++l) {
                const float a = fast_expf(d[l] * an[l]);
                const float hv = a * hn[l] + du[l] * bn;
                hn[l] = hv;
                acc[l] += hv * cn;
            }
        }
        for (int l = 0; l < VL; ++l) yv[t * VL + l] = acc[l];
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* x86-64 with AVX2 + FMA (the -march=native build on any recent x86 CPU): the same
 * computation with explicit 8-wide intrinsics, which gives tighter code than the compiler's
 * if-converted clamps, and two accumulators to shorten the dependency chain of the sum. */
#include <immintrin.h>
#define SCAN_IMPL "avx2"

/* exp of G independent vectors, stage by stage: the G dependency chains (~50 cycles each)
 * are interleaved in the instruction stream, so the out-of-order core overlaps them. */
#ifndef G
#define G 4
#endif
INLINE void exp_avx2_g(__m256* x)
{
    const __m256 lo = _mm256_set1_ps(EXP_LO), hi = _mm256_set1_ps(EXP_HI);
    const __m256 magic = _mm256_set1_ps(EXP_MAGIC), log2e = _mm256_set1_ps(EXP_LOG2E);
    const __m256 two = _mm256_set1_ps(2.0f);
    __m256 t[G], r[G], p[G];
    for (int k = 0; k < G; ++k) x[k] = _mm256_max_ps(lo, x[k]);  /* operand order keeps NaN */
    for (int k = 0; k < G; ++k) x[k] = _mm256_min_ps(hi, x[k]);
    for (int k = 0; k < G; ++k) t[k] = _mm256_fmadd_ps(x[k], log2e, magic);
    for (int k = 0; k < G; ++k) r[k] = _mm256_sub_ps(t[k], magic);           /* n */
    for (int k = 0; k < G; ++k) p[k] = _mm256_fnmadd_ps(r[k], _mm256_set1_ps(EXP_C1), x[k]);
    for (int k = 0; k < G; ++k) r[k] = _mm256_fnmadd_ps(r[k], _mm256_set1_ps(EXP_C2), p[k]);
    for (int k = 0; k < G; ++k) p[k] = _mm256_fmadd_ps(_mm256_set1_ps(EXP_P0), r[k],
                                                       _mm256_set1_ps(EXP_P1));
    for (int k = 0; k < G; ++k) p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(EXP_P2));
    for (int k = 0; k < G; ++k) p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(EXP_P3));
    for (int k = 0; k < G; ++k) p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(EXP_P4));
    for (int k = 0; k < G; ++k) p[k] = _mm256_fmadd_ps(p[k], r[k], _mm256_set1_ps(EXP_P5));
    for (int k = 0; k < G; ++k)
        p[k] = _mm256_fmadd_ps(p[k], _mm256_mul_ps(r[k], r[k]), _mm256_fmadd_ps(r[k], two, two));
    for (int k = 0; k < G; ++k)
        x[k] = _mm256_mul_ps(p[k], _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_castps_si256(t[k]), 23)));
}

/* States n0 .. n0+cnt-1 (cnt <= G) of the VL lanes for one token; returns the updated sum. */
INLINE __m256 scan_states_avx2(const int cnt, const __m256 d, const __m256 du,
                               const float* restrict an, float* restrict hn,
                               const float* restrict bp, const float* restrict cp, __m256 acc)
{
    __m256 a[G];
    for (int k = 0; k < G; ++k)
        a[k] = k < cnt ? _mm256_mul_ps(d, _mm256_loadu_ps(an + k * VL)) : _mm256_setzero_ps();
    exp_avx2_g(a);
    for (int k = 0; k < cnt; ++k) {
        const __m256 hv = _mm256_fmadd_ps(a[k], _mm256_loadu_ps(hn + k * VL),
                                          _mm256_mul_ps(du, _mm256_set1_ps(bp[k])));
        _mm256_storeu_ps(hn + k * VL, hv);
        acc = _mm256_fmadd_ps(hv, _mm256_set1_ps(cp[k]), acc);
    }
    return acc;
}

INLINE void scan_lanes_avx2(const int64_t N, const int64_t tb,
                            const float* restrict AT, const float* restrict Bt,
                            const float* restrict Ct, const float* restrict dtv,
                            const float* restrict duv, float* restrict h, float* restrict yv)
{
    for (int64_t t = 0; t < tb; ++t) {
        const __m256 d = _mm256_loadu_ps(dtv + t * VL);
        const __m256 du = _mm256_loadu_ps(duv + t * VL);
        __m256 acc = _mm256_setzero_ps();
        int64_t n = 0;
        for (; n + G <= N; n += G)
            acc = scan_states_avx2(G, d, du, AT + n * VL, h + n * VL, Bt + t * N + n,
                                   Ct + t * N + n, acc);
        if (n < N)
            acc = scan_states_avx2((int)(N - n), d, du, AT + n * VL, h + n * VL, Bt + t * N + n,
                                   Ct + t * N + n, acc);
        _mm256_storeu_ps(yv + t * VL, acc);
    }
}
#define scan_lanes scan_lanes_avx2
#else
#define SCAN_IMPL "generic"
#define scan_lanes scan_lanes_generic
#endif

static void scan_lanes_any(const int64_t N, const int64_t tb, const float* AT,
                           const float* Bt, const float* Ct, const float* dtv, const float* duv,
                           float* h, float* yv)
{
    switch (N) {  /* constant N: the state loop is unrolled */
    case 16: scan_lanes(16, tb, AT, Bt, Ct, dtv, duv, h, yv); break;
    case 32: scan_lanes(32, tb, AT, Bt, Ct, dtv, duv, h, yv); break;
    case 64: scan_lanes(64, tb, AT, Bt, Ct, dtv, duv, h, yv); break;
    default: scan_lanes(N, tb, AT, Bt, Ct, dtv, duv, h, yv); break;
    }
}

/* dst[j][i] = src[i][j] for i < rows, j < cols (row strides ss, ds), by 8x8 blocks. */
#if defined(__AVX2__) && defined(__FMA__)
INLINE void transpose8x8(const float* src, int64_t ss, float* dst, int64_t ds)
{
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss),
                 r2 = _mm256_loadu_ps(src + 2 * ss), r3 = _mm256_loadu_ps(src + 3 * ss),
                 r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
                 r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#else
INLINE void transpose8x8(const float* src, int64_t ss, float* dst, int64_t ds)
{
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 8; ++j) dst[j * ds + i] = src[i * ss + j];
}
#endif

static void transpose(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows,
                      int64_t cols)
{
    const int64_t r8 = rows - rows % 8, c8 = cols - cols % 8;
    for (int64_t i = 0; i < r8; i += 8)
        for (int64_t j = 0; j < c8; j += 8) transpose8x8(src + i * ss + j, ss, dst + j * ds + i, ds);
    for (int64_t i = 0; i < rows; ++i) {
        const int64_t j0 = i < r8 ? c8 : 0;  /* the column tail, or whole rows past r8 */
        for (int64_t j = j0; j < cols; ++j) dst[j * ds + i] = src[i * ss + j];
    }
}

/* The kernel's exp and softplus over an array (for accuracy tests): the AVX2 exp where the
 * scan uses it, the portable one otherwise and for the tail. */
void mambacsr_scan_cpu_expf(const float* x, float* out, int64_t n)
{
    int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; i + G * VL <= n; i += G * VL) {
        __m256 v[G];
        for (int k = 0; k < G; ++k) v[k] = _mm256_loadu_ps(x + i + k * VL);
        exp_avx2_g(v);
        for (int k = 0; k < G; ++k) _mm256_storeu_ps(out + i + k * VL, v[k]);
    }
#endif
    for (; i < n; ++i) out[i] = fast_expf(x[i]);
}

void mambacsr_scan_cpu_softplus(const float* x, float* out, int64_t n)
{
    SIMD
    for (int64_t i = 0; i < n; ++i) out[i] = softplus_f(x[i]);
}

int mambacsr_scan_cpu_abi(void) { return MAMBACSR_SCAN_ABI; }

const char* mambacsr_scan_cpu_impl(void) { return SCAN_IMPL; }

const char* mambacsr_scan_cpu_status_string(int status)
{
    switch (status) {
    case SCAN_CPU_OK: return "ok";
    case SCAN_CPU_ERR_INVALID_ARGUMENT: return "invalid argument";
    case SCAN_CPU_ERR_NO_MEMORY: return "out of memory";
    default: return "unknown status";
    }
}

int mambacsr_scan_cpu_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---- scan orders: tokens gathered out of storage order, y scattered back ------------------- */

/* How the 8 positions of one chunk (8 consecutive sequence tokens, counted from the start of
 * their block) lie in storage, so that a row is gathered with vector loads where the order
 * allows: a run forwards or backwards (row-first windows, flips) or, over 8 chunks, an 8 x 8
 * tile read column by column (column-first windows: one transpose). The rest - cross-scale
 * groups of five, the full-height columns of c_w64, windows cut by the grid's edge - goes
 * position by position. */
enum {
    CHUNK_ANY = 0,       /* position by position (-1: virtual / not written) */
    CHUNK_NONE,          /* all -1 */
    CHUNK_FORWARD,       /* p[k] = p[0] + k */
    CHUNK_BACKWARD,      /* p[k] = p[0] - k */
    CHUNK_TILE,          /* this and the next 7 chunks: p[8i + k] = p[0] + i + k*s */
    CHUNK_TILE_BACKWARD, /* this and the next 7 chunks: p[8i + k] = p[0] - i + k*s */
    CHUNK_IN_TILE        /* covered by a tile that starts earlier */
};

/* A scan order as tables, built once per call from mambacsr_scan_order.h so that the index
 * arithmetic is not repeated for every channel: per sequence token its source and target storage
 * positions (-1: a virtual token / an output that is not written); per chunk of a block its
 * CHUNK_* kind for each; per block the distinct cache lines (16 floats) those positions fall
 * in, so that the block's rows can be prefetched while the block before is scanned (gathers
 * are out of reach of the hardware prefetcher and the rows are in L3 or memory: without this,
 * waiting for them costs about as much as the scan). */
typedef struct {
    int64_t seq_off[MAMBACSR_SCAN_MAX_GROUPS + 1];  /* group g's tokens: [seq_off[g], [g+1]) */
    int64_t blk_off[MAMBACSR_SCAN_MAX_GROUPS + 1];  /* group g's blocks: [blk_off[g], [g+1]) */
    int64_t tblock;                                 /* tokens per block */
    int64_t cpb;                                    /* chunks per block: ceil(tblock / 8) */
    int32_t* src;        /* [token] */
    int32_t* tgt;        /* [token] */
    int32_t* src_lines;  /* [block][tblock]: distinct lines of the block's sources, ascending */
    int32_t* tgt_lines;  /* [block][tblock]: same for the targets */
    int32_t* n_lines;    /* [block][2]: how many of each */
    int8_t* src_kind;    /* [block][cpb]: CHUNK_* of the sources */
    int8_t* tgt_kind;    /* [block][cpb]: CHUNK_* of the targets */
} order_tables;

#define LINE_SHIFT 4  /* 16 floats: 64-byte cache lines */

/* The distinct pos[i] >> LINE_SHIFT over pos[i] >= 0, ascending, into out; returns how many. */
static int32_t distinct_lines(const int32_t* pos, int64_t n, int32_t* out)
{
    int32_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (pos[i] < 0) continue;
        const int32_t v = pos[i] >> LINE_SHIFT;
        int32_t j = m;  /* insertion sort: the positions come in runs, so this is short */
        while (j > 0 && out[j - 1] > v) --j;
        if (j > 0 && out[j - 1] == v) continue;
        memmove(out + j + 1, out + j, (size_t)(m - j) * sizeof(int32_t));
        out[j] = v;
        ++m;
    }
    return m;
}

/* p[8i + k] == p[0] + a*i + k*s for i, k < 8, all >= 0 (s = p[1] - p[0] != 0). */
static int is_tile(const int32_t* p, int32_t a)
{
    const int64_t s = (int64_t)p[1] - p[0];
    if (s == 0 || p[0] < 0) return 0;
    for (int i = 0; i < 8; ++i)
        for (int k = 0; k < 8; ++k) {
            const int32_t v = p[8 * i + k];
            if (v < 0 || v != p[0] + a * i + k * s) return 0;
        }
    return 1;
}

/* CHUNK_* of each chunk of a block's n positions. */
static void classify_chunks(const int32_t* pos, int64_t n, int8_t* kind)
{
    const int64_t nch = (n + 7) / 8;
    for (int64_t c = 0; c < nch; ++c) kind[c] = -1;
    for (int64_t c = 0; c < nch; ++c) {
        if (kind[c] >= 0) continue;  /* inside a tile */
        const int32_t* p = pos + 8 * c;
        const int64_t m = n - 8 * c < 8 ? n - 8 * c : 8;
        const int full = m == 8 && p[0] >= 0;
        int none = 1, fwd = full, bwd = full && p[0] >= 7;
        for (int64_t k = 0; k < m; ++k) {
            none &= p[k] < 0;
            fwd &= p[k] == p[0] + k;
            bwd &= p[k] == p[0] - k;
        }
        if (none) kind[c] = CHUNK_NONE;
        else if (fwd) kind[c] = CHUNK_FORWARD;
        else if (bwd) kind[c] = CHUNK_BACKWARD;
        else if (8 * c + 64 <= n && (is_tile(p, 1) || is_tile(p, -1))) {
            kind[c] = is_tile(p, 1) ? CHUNK_TILE : CHUNK_TILE_BACKWARD;
            for (int i = 1; i < 8; ++i) kind[c + i] = CHUNK_IN_TILE;
        } else kind[c] = CHUNK_ANY;
    }
}

static void free_order_tables(order_tables* ot) { free(ot->src); ot->src = NULL; }

/* Returns SCAN_CPU_OK, _ERR_INVALID_ARGUMENT (a sequence too long for int32 positions) or
 * _ERR_NO_MEMORY. */
static int build_order_tables(const mambacsr_scan_order_t* order, int64_t K, int64_t L,
                              int64_t tblock_max, int nt, order_tables* ot)
{
    int64_t max_seq = 0;
    ot->seq_off[0] = ot->blk_off[0] = 0;
    if (L > INT32_MAX) return SCAN_CPU_ERR_INVALID_ARGUMENT;
    for (int64_t g = 0; g < K; ++g) {
        const int64_t s = mambacsr_order_seq_len(order, (int)g, L);
        if (s > INT32_MAX) return SCAN_CPU_ERR_INVALID_ARGUMENT;
        if (s > max_seq) max_seq = s;
        ot->seq_off[g + 1] = ot->seq_off[g] + s;
    }
    ot->tblock = max_seq < tblock_max ? max_seq : tblock_max;
    ot->cpb = (ot->tblock + 7) / 8;
    for (int64_t g = 0; g < K; ++g)
        ot->blk_off[g + 1] = ot->blk_off[g]
            + (ot->seq_off[g + 1] - ot->seq_off[g] + ot->tblock - 1) / ot->tblock;
    const int64_t tokens = ot->seq_off[K], blocks = ot->blk_off[K];
    const size_t n32 = (size_t)(2 * tokens + 2 * blocks * ot->tblock + 2 * blocks);
    ot->src = (int32_t*)malloc(n32 * sizeof(int32_t) + (size_t)(2 * blocks * ot->cpb));
    if (!ot->src) return SCAN_CPU_ERR_NO_MEMORY;
    ot->tgt = ot->src + tokens;
    ot->src_lines = ot->tgt + tokens;
    ot->tgt_lines = ot->src_lines + blocks * ot->tblock;
    ot->n_lines = ot->tgt_lines + blocks * ot->tblock;
    ot->src_kind = (int8_t*)(ot->src + n32);
    ot->tgt_kind = ot->src_kind + blocks * ot->cpb;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4)
#endif
    for (int64_t j = 0; j < blocks; ++j) {
        int64_t g = 0;
        while (j >= ot->blk_off[g + 1]) ++g;
        const int64_t t0 = ot->seq_off[g] + (j - ot->blk_off[g]) * ot->tblock;
        const int64_t end = ot->seq_off[g + 1];
        const int64_t t1 = t0 + ot->tblock < end ? t0 + ot->tblock : end;
        for (int64_t i = t0; i < t1; ++i) {
            ot->src[i] = (int32_t)mambacsr_order_source(order, (int)g, i - ot->seq_off[g], L);
            ot->tgt[i] = (int32_t)mambacsr_order_target(order, (int)g, i - ot->seq_off[g], L);
        }
        const int64_t n = t1 - t0;
        ot->n_lines[2 * j] = distinct_lines(ot->src + t0, n, ot->src_lines + j * ot->tblock);
        ot->n_lines[2 * j + 1] = distinct_lines(ot->tgt + t0, n, ot->tgt_lines + j * ot->tblock);
        classify_chunks(ot->src + t0, n, ot->src_kind + j * ot->cpb);
        classify_chunks(ot->tgt + t0, n, ot->tgt_kind + j * ot->cpb);
    }
    (void)nt;
    return SCAN_CPU_OK;
}

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH_READ(p) __builtin_prefetch((p), 0, 3)
#define PREFETCH_WRITE(p) __builtin_prefetch((p), 1, 3)
#else
#define PREFETCH_READ(p) ((void)(p))
#define PREFETCH_WRITE(p) ((void)(p))
#endif

/* Prefetch the lines of a row (lines: line numbers relative to the row's start). */
INLINE void prefetch_row(const float* row, const int32_t* lines, int32_t n, int write)
{
    if (write)
        for (int32_t i = 0; i < n; ++i) PREFETCH_WRITE(row + ((int64_t)lines[i] << LINE_SHIFT));
    else
        for (int32_t i = 0; i < n; ++i) PREFETCH_READ(row + ((int64_t)lines[i] << LINE_SHIFT));
}

/* out[t] = row[src[t]] over a block's tb tokens, 0 for virtual tokens (src < 0), chunk by chunk
 * as `kind` says. One row at a time: the positions a block reads are close together in it, so
 * they stay in L1 (8 rows read side by side, L floats apart, would compete for one L1 set). */
static void gather_row(const int64_t tb, const int32_t* restrict src, const int8_t* restrict kind,
                       const float* restrict row, float* restrict out)
{
    for (int64_t c = 0; c * 8 < tb; ++c) {
        const int32_t* p = src + 8 * c;
        float* restrict o = out + 8 * c;
        switch (kind[c]) {
        case CHUNK_FORWARD:
            for (int k = 0; k < 8; ++k) o[k] = row[p[0] + k];
            break;
        case CHUNK_BACKWARD:
            for (int k = 0; k < 8; ++k) o[k] = row[p[0] - k];
            break;
        case CHUNK_TILE:  /* o[8i + k] = row[p0 + i + k*s]: rows k of the tile, transposed */
            transpose8x8(row + p[0], p[1] - p[0], o, 8);
            break;
        case CHUNK_TILE_BACKWARD:  /* o[8i + k] = row[p0 - i + k*s]: the same, chunks reversed */
            transpose8x8(row + p[0] - 7, p[1] - p[0], o + 56, -8);
            break;
        case CHUNK_IN_TILE:
            break;
        default: {  /* CHUNK_ANY, CHUNK_NONE */
            const int64_t m = tb - 8 * c < 8 ? tb - 8 * c : 8;
            for (int64_t k = 0; k < m; ++k) o[k] = p[k] >= 0 ? row[p[k]] : 0.0f;
        }
        }
    }
}

/* row[tgt[t]] = yw[t] + Dc * uw[t] for the block's tokens whose output is written (tgt >= 0),
 * chunk by chunk as `kind` says. */
static void scatter_row(const int64_t tb, const int32_t* restrict tgt, const int8_t* restrict kind,
                        const float* restrict yw, const float* restrict uw, const float Dc,
                        float* restrict row)
{
    float v[64];
    for (int64_t c = 0; c * 8 < tb; ++c) {
        const int32_t* p = tgt + 8 * c;
        const float* restrict yc = yw + 8 * c;
        const float* restrict uc = uw + 8 * c;
        switch (kind[c]) {
        case CHUNK_FORWARD:
            for (int k = 0; k < 8; ++k) row[p[0] + k] = yc[k] + Dc * uc[k];
            break;
        case CHUNK_BACKWARD:
            for (int k = 0; k < 8; ++k) row[p[0] - k] = yc[k] + Dc * uc[k];
            break;
        case CHUNK_TILE:  /* row[p0 + i + k*s] = v[8i + k] */
        case CHUNK_TILE_BACKWARD:  /* row[p0 - i + k*s] = v[8i + k] */
            for (int k = 0; k < 64; ++k) v[k] = yc[k] + Dc * uc[k];
            if (kind[c] == CHUNK_TILE)
                transpose8x8(v, 8, row + p[0], p[1] - p[0]);
            else
                transpose8x8(v + 56, -8, row + p[0] - 7, p[1] - p[0]);
            break;
        case CHUNK_IN_TILE:
        case CHUNK_NONE:
            break;
        default: {
            const int64_t m = tb - 8 * c < 8 ? tb - 8 * c : 8;
            for (int64_t k = 0; k < m; ++k)
                if (p[k] >= 0) row[p[k]] = yc[k] + Dc * uc[k];
        }
        }
    }
}

/* dt = softplus(delta + bias) (or delta + bias) and dt*u over one row of tokens. */
INLINE void dt_row(const int softplus, const int64_t tb, const float* restrict dr,
                   const float* restrict ur, const float bias, float* restrict dw,
                   float* restrict uw)
{
    if (softplus) {
        SIMD
        for (int64_t t = 0; t < tb; ++t) {
            const float d = softplus_f(dr[t] + bias);
            dw[t] = d;
            uw[t] = d * ur[t];
        }
    } else {
        SIMD
        for (int64_t t = 0; t < tb; ++t) {
            const float d = dr[t] + bias;
            dw[t] = d;
            uw[t] = d * ur[t];
        }
    }
}

/* Returns SCAN_CPU_OK, SCAN_CPU_ERR_INVALID_ARGUMENT (an invalid order included) or
 * SCAN_CPU_ERR_NO_MEMORY. order == NULL: the identity order. */
int mambacsr_scan_cpu_f32_ordered(const float* u, const float* delta, const float* A,
                                  const float* Bs, const float* Cs, const float* D,
                                  const float* delta_bias, float* y, int64_t batch, int64_t K,
                                  int64_t C, int64_t N, int64_t L, int u_shared,
                                  const mambacsr_scan_order_t* order, int delta_softplus,
                                  int num_threads)
{
    if (batch < 0 || K < 0 || C < 0 || N < 0 || L < 0) return SCAN_CPU_ERR_INVALID_ARGUMENT;
    if (order && (K > MAMBACSR_SCAN_MAX_GROUPS || mambacsr_order_check(order, K, L)))
        return SCAN_CPU_ERR_INVALID_ARGUMENT;
    if (batch == 0 || K == 0 || C == 0 || L == 0) return SCAN_CPU_OK;
    const int64_t KC = K * C;
    const int64_t Cu = u_shared ? C : KC;  /* rows of u per batch */

    /* The plain token order keeps the contiguous path: rows read in place. */
    int ordered = 0;
    if (order) {
        ordered = order->kind != MAMBACSR_ORDER_IDENTITY;
        for (int64_t g = 0; g < K; ++g) ordered |= order->flags[g] != 0;
    }

    int nt = num_threads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
#endif
    if (nt <= 0) nt = 1;

    order_tables ot;
    memset(&ot, 0, sizeof ot);
    if (ordered) {
        const int err = build_order_tables(order, K, L, ORDERED_TOKENS_PER_BLOCK, nt, &ot);
        if (err) return err;
    }
    const int64_t tblock = ordered ? ot.tblock : (L < TOKENS_PER_BLOCK ? L : TOKENS_PER_BLOCK);

    /* Work item = (batch, group, tile of lane-groups). Tiles share the B/C block in L1; make
     * them small enough that every thread gets several items. */
    const int64_t lgroups = (C + VL - 1) / VL;           /* lane-groups per group */
    int64_t tile = batch * K * lgroups / (4 * (int64_t)nt);
    if (tile > TILE_LG) tile = TILE_LG;
    if (tile < 1) tile = 1;
    const int64_t tiles_per_group = (lgroups + tile - 1) / tile;
    const int64_t n_items = batch * K * tiles_per_group;
    if ((int64_t)nt > n_items) nt = (int)n_items;

    int status = SCAN_CPU_OK;
    const int64_t Nb = N > 0 ? N : 1;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        /* Per-thread scratch. Lane-interleaved [t][VL]: dt, dt*u, y of one lane-group;
         * [tile][n][VL]: A and the states of the tile; row-major [VL][t]: dt, dt*u, y rows and
         * (ordered) the gathered u rows, for D*u; token-major [t][n]: the group's B and C
         * block (B/C rows are L floats apart: reading them in place would put 2N lines in one
         * L1 set); (ordered) [n][t] or [t]: gathered rows before their transpose / use. */
        const int64_t gsz = ordered ? tblock * Nb : 0;
        const size_t nflt = (size_t)((ordered ? 7 : 6) * tblock * VL + 2 * tile * Nb * VL
                                     + 2 * tblock * Nb + gsz);
        float* scratch = (float*)malloc(nflt * sizeof(float));
        if (!scratch) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            status = SCAN_CPU_ERR_NO_MEMORY;
        }
        float* dtv = scratch;
        float* duv = dtv + tblock * VL;
        float* yv = duv + tblock * VL;
        float* drows = yv + tblock * VL;
        float* urows = drows + tblock * VL;
        float* yrows = urows + tblock * VL;
        float* AT = yrows + tblock * VL;             /* [tile][n][VL] */
        float* hs = AT + tile * Nb * VL;             /* [tile][n][VL] */
        float* Bt = hs + tile * Nb * VL;             /* [t][n] */
        float* Ct = Bt + tblock * Nb;
        float* graw = Ct + tblock * Nb;              /* ordered: [n][t], or one row [t] */
        float* uraw = graw + gsz;                    /* ordered: [VL][t] */

#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t item = 0; item < n_items; ++item) {
            if (!scratch) continue;
            const int64_t b = item / (K * tiles_per_group);
            const int64_t rem = item % (K * tiles_per_group);
            const int64_t g = rem / tiles_per_group;
            const int64_t lg0 = (rem % tiles_per_group) * tile;
            const int64_t lg1 = lg0 + tile < lgroups ? lg0 + tile : lgroups;
            const float* Bg = Bs + (b * K + g) * N * L;
            const float* Cg = Cs + (b * K + g) * N * L;
            /* u row / delta and y row of the group's channel 0 */
            const float* ug = u + (b * Cu + (u_shared ? 0 : g * C)) * L;
            const float* dg = delta + (b * KC + g * C) * L;
            float* yg = y + (b * KC + g * C) * L;
            const int64_t S = ordered ? ot.seq_off[g + 1] - ot.seq_off[g] : L;
            const int32_t* src = ordered ? ot.src + ot.seq_off[g] : NULL;
            const int32_t* tgt = ordered ? ot.tgt + ot.seq_off[g] : NULL;
            const int64_t blk0 = ot.blk_off[g];  /* the group's first block in the tables */

            /* A of the tile's channels, lane-interleaved (0 for padding lanes); states = 0 */
            for (int64_t lg = lg0; lg < lg1; ++lg) {
                float* at = AT + (lg - lg0) * Nb * VL;
                for (int l = 0; l < VL; ++l) {
                    const int64_t cl = lg * VL + l;
                    for (int64_t n = 0; n < N; ++n)
                        at[n * VL + l] = cl < C ? A[(g * C + cl) * N + n] : 0.0f;
                }
            }
            memset(hs, 0, (size_t)((lg1 - lg0) * Nb * VL) * sizeof(float));

            for (int64_t t0 = 0; t0 < S; t0 += tblock) {
                const int64_t tb = t0 + tblock < S ? tblock : S - t0;
                /* ordered: the lines the next block reads (and writes) */
                const int64_t blk = blk0 + t0 / tblock;
                const int8_t* skind = ordered ? ot.src_kind + blk * ot.cpb : NULL;
                const int8_t* tkind = ordered ? ot.tgt_kind + blk * ot.cpb : NULL;
                const int64_t nxt = ordered && t0 + tblock < S ? blk + 1 : -1;
                const int32_t* nsrc = nxt >= 0 ? ot.src_lines + nxt * tblock : NULL;
                const int32_t* ntgt = nxt >= 0 ? ot.tgt_lines + nxt * tblock : NULL;
                const int32_t nns = nxt >= 0 ? ot.n_lines[2 * nxt] : 0;
                const int32_t nnt = nxt >= 0 ? ot.n_lines[2 * nxt + 1] : 0;
                if (ordered) {
                    for (int64_t n = 0; n < N; ++n) {
                        gather_row(tb, src + t0, skind, Bg + n * L, graw + n * tb);
                        prefetch_row(Bg + n * L, nsrc, nns, 0);
                    }
                    transpose(graw, tb, Bt, N, N, tb);
                    for (int64_t n = 0; n < N; ++n) {
                        gather_row(tb, src + t0, skind, Cg + n * L, graw + n * tb);
                        prefetch_row(Cg + n * L, nsrc, nns, 0);
                    }
                    transpose(graw, tb, Ct, N, N, tb);
                } else {
                    transpose(Bg + t0, L, Bt, N, N, tb);
                    transpose(Cg + t0, L, Ct, N, N, tb);
                }
                for (int64_t lg = lg0; lg < lg1; ++lg) {
                    const int64_t c0 = lg * VL;
                    const int64_t nl = C - c0 < VL ? C - c0 : VL;  /* real lanes */
                    /* dt and dt*u rows of the lane-group's channels, then lane-interleaved */
                    for (int l = 0; l < VL; ++l) {
                        float* dw = drows + l * tblock;
                        float* uw = urows + l * tblock;
                        if (l >= nl) {  /* padding lane: dt = 0 keeps its state at 0 */
                            memset(dw, 0, (size_t)tb * sizeof(float));
                            memset(uw, 0, (size_t)tb * sizeof(float));
                            continue;
                        }
                        const int64_t cl = c0 + l;
                        const float bias = delta_bias ? delta_bias[g * C + cl] : 0.0f;
                        if (ordered) {
                            float* ul = uraw + l * tblock;
                            gather_row(tb, src + t0, skind, ug + cl * L, ul);
                            gather_row(tb, src + t0, skind, dg + cl * L, graw);
                            prefetch_row(ug + cl * L, nsrc, nns, 0);
                            prefetch_row(dg + cl * L, nsrc, nns, 0);
                            dt_row(delta_softplus, tb, graw, ul, bias, dw, uw);
                        } else {
                            dt_row(delta_softplus, tb, dg + cl * L + t0, ug + cl * L + t0, bias,
                                   dw, uw);
                        }
                    }
                    transpose(drows, tblock, dtv, VL, VL, tb);
                    transpose(urows, tblock, duv, VL, VL, tb);
                    scan_lanes_any(N, tb, AT + (lg - lg0) * Nb * VL, Bt, Ct, dtv,
                                   duv, hs + (lg - lg0) * Nb * VL, yv);
                    transpose(yv, VL, yrows, tblock, tb, VL);
                    /* y = scan + D*u, in place or through the target table */
                    for (int64_t l = 0; l < nl; ++l) {
                        const int64_t cl = c0 + l;
                        const float* yw = yrows + l * tblock;
                        const float Dc = D ? D[g * C + cl] : 0.0f;
                        if (ordered) {
                            scatter_row(tb, tgt + t0, tkind, yw, uraw + l * tblock, Dc,
                                        yg + cl * L);
                            prefetch_row(yg + cl * L, ntgt, nnt, 1);
                        } else {
                            const float* ur = ug + cl * L + t0;
                            float* yr = yg + cl * L + t0;
                            SIMD
                            for (int64_t t = 0; t < tb; ++t) yr[t] = yw[t] + Dc * ur[t];
                        }
                    }
                }
            }
        }
        free(scratch);
    }
    free_order_tables(&ot);
    return status;
}
