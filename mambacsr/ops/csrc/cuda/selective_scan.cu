// selective_scan.cu - the MambaCSR SelectiveScan CUDA kernel (contract: mambacsr_scan.h, orders:
// mambacsr_scan_order.h). Design log with measurements: NOTES.md beside this file.
//
//  * One exp per (batch, channel, state, token) is the floor (special-function unit), so the
//    state stays in registers and every exp is computed on the recurrence's own thread.
//  * A block owns CB channels of one (batch, group) and one chunk of the group's sequence, and
//    walks it in tiles of NT tokens. W threads share a channel, each holding S of its N states
//    (state n = s * W + lane); R channels per thread.
//  * Per tile: the storage positions of the tile's tokens (mambacsr_order_source / _target) go
//    to shared memory, loaded from a table that order_table_kernel writes once per call into
//    the workspace (computed in every block without workspace; inline for the identity order).
//    u, delta, Bs, Cs are gathered with 16-byte loads wherever VEC consecutive tokens are VEC
//    contiguous (ascending or descending) aligned elements, element by element otherwise, and
//    prefetched into registers one tile ahead, untouched until used; softplus(delta + bias),
//    dt * u and D * u are computed once per (channel, token) into shared memory; Bs/Cs are
//    staged once and shared by the block's CB channels. The inner loop reads each block of W
//    tokens' dt, dt * u, B and C from shared memory while the block before it is scanned
//    (software-pipelined: NOTES.md part 9). The W partial sums of a token are
//    combined by a transpose-reduce (W - 1 shuffles per W tokens) and y is scattered like the
//    inputs were gathered.
//  * Small batches do not fill the GPU with one block per channel group (batch 1: 11,520
//    recurrences), so the sequence is cut into chunks scanned in parallel: pass 1 (MODE_STATE)
//    scans every chunk but the last from h = 0 and stores its end state and its sum of dt into
//    the caller's workspace; pass 2 (MODE_OUT) folds the end states of the chunks before its own
//    (h = exp(A * sum dt) * h + h_end, one exp per chunk and state) and rescans its chunk from
//    there, writing y. The single pass is MODE_OUT with one chunk.
//  * SEG > 1: a block scans SEG adjacent chunks side by side, each tile holding QT = NT / SEG
//    tokens of each. With chunks of one column of a column-first window (c_w64: the transpose
//    of the tile), a tile's tokens are then rows of SEG contiguous elements instead of one
//    element per row.
#include "mambacsr_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// ---- element types ---------------------------------------------------------------------------
template <typename T> struct Elem;
template <> struct Elem<float> {
    __device__ static uint32_t bits(const float* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }
    __device__ static void store_bits(float* p, uint32_t v) { *reinterpret_cast<unsigned int*>(p) = v; }
    __device__ static void unpack(const uint4& v, float* out) {
        out[0] = __uint_as_float(v.x); out[1] = __uint_as_float(v.y);
        out[2] = __uint_as_float(v.z); out[3] = __uint_as_float(v.w);
    }
    __device__ static uint4 pack(const float* in) {
        return make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]),
                          __float_as_uint(in[2]), __float_as_uint(in[3]));
    }
};
template <> struct Elem<__half> {
    __device__ static uint32_t bits(const __half* p) { return __ldg(reinterpret_cast<const unsigned short*>(p)); }
    __device__ static void store_bits(__half* p, uint32_t v) { *reinterpret_cast<unsigned short*>(p) = (unsigned short)v; }
    __device__ static void unpack(const uint4& v, float* out) {
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __half2 h2 = *reinterpret_cast<const __half2*>(&w[i]);
            float2 f = __half22float2(h2);
            out[2 * i] = f.x; out[2 * i + 1] = f.y;
        }
    }
    __device__ static uint4 pack(const float* in) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __half2 h2 = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
            w[i] = *reinterpret_cast<uint32_t*>(&h2);
        }
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
};
template <> struct Elem<__nv_bfloat16> {
    __device__ static uint32_t bits(const __nv_bfloat16* p) { return __ldg(reinterpret_cast<const unsigned short*>(p)); }
    __device__ static void store_bits(__nv_bfloat16* p, uint32_t v) { *reinterpret_cast<unsigned short*>(p) = (unsigned short)v; }
    __device__ static void unpack(const uint4& v, float* out) {
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __nv_bfloat162 h2 = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
            float2 f = __bfloat1622float2(h2);
            out[2 * i] = f.x; out[2 * i + 1] = f.y;
        }
    }
    __device__ static uint4 pack(const float* in) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __nv_bfloat162 h2 = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
            w[i] = *reinterpret_cast<uint32_t*>(&h2);
        }
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
};

// Streamed once: do not keep in L1.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
// Bs/Cs: read by every channel block of the group; default caching (L2 hits).
__device__ __forceinline__ uint4 ld_shared_input(const void* p) {
    return __ldg(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ void st_stream(void* p, const uint4& v) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1,%2,%3,%4};"
                 :: "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// softplus as mamba-ssm (x > 20 -> x, else log1p(exp(x))), written as max(x, 0) + log1p(e),
// e = exp(-|x|) in (0, 1]: log1p(e) = e * P(e), P of degree 8 fitted to log1p(e) / e for relative
// error (2.0e-7 evaluated in float32 over (0, 1]). One special-function op and 11 others, where a
// series or lg2(1 + e) by the size of e took two and 14 (NOTES.md part 12).
__device__ __forceinline__ float softplus(float x) {
    const float e = exp2_approx(-fabsf(x) * kLog2e);
    float q = 0.00543441623f;
    q = fmaf(q, e, -0.0303755235f);
    q = fmaf(q, e, 0.07976491f);
    q = fmaf(q, e, -0.138066739f);
    q = fmaf(q, e, 0.191813454f);
    q = fmaf(q, e, -0.248650447f);
    q = fmaf(q, e, 0.333224148f);
    q = fmaf(q, e, -0.49999702f);
    q = fmaf(q, e, 1.f);
    return fmaf(e, q, fmaxf(x, 0.f));
}

// ---- gathers and scatters of VEC consecutive tokens --------------------------------------------
// A group of VEC tokens whose storage positions are VEC consecutive elements, aligned to 16
// bytes, ascending or descending, moves with one 16-byte access; any other group element by
// element (position -1: a virtual token, reads 0, is not written).
enum : int { RUN_SCALAR = 0, RUN_ASC = 1, RUN_DESC = 2 };

template <int VEC>
__device__ __forceinline__ int run_kind(const int (&s)[VEC], bool vec_ok) {
    bool asc = vec_ok && s[0] >= 0 && s[0] % VEC == 0;
    bool desc = vec_ok && s[VEC - 1] >= 0 && s[VEC - 1] % VEC == 0;
#pragma unroll
    for (int e = 1; e < VEC; ++e) {
        asc = asc && s[e] == s[0] + e;
        desc = desc && s[e] == s[0] - e;
    }
    return asc ? RUN_ASC : desc ? RUN_DESC : RUN_SCALAR;
}

// Element order of a 16-byte vector reversed.
template <typename T>
__device__ __forceinline__ uint4 reverse16(const uint4& v) {
    if (sizeof(T) == 4) return make_uint4(v.w, v.z, v.y, v.x);
    return make_uint4(__byte_perm(v.w, 0, 0x1032), __byte_perm(v.z, 0, 0x1032),
                      __byte_perm(v.y, 0, 0x1032), __byte_perm(v.x, 0, 0x1032));
}

// The raw 16 bytes of a group (token stride ts; vector runs only where ts == 1), element order as stored (a descending group comes out reversed:
// prep_regs flips it when it unpacks). Nothing but the load touches the destination registers,
// so the load stays in flight until the values are used one tile later (a permute or a select
// here would wait for it).
template <typename T, int VEC, bool STREAM>
__device__ __forceinline__ uint4 gather(const T* row, const int (&s)[VEC], int kind, int64_t ts) {
    if (kind != RUN_SCALAR) {
        const T* q = row + (kind == RUN_DESC ? s[VEC - 1] : s[0]);
        return STREAM ? ld_stream(q) : ld_shared_input(q);
    }
    uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        uint32_t v = 0u;
        if (s[e] >= 0) v = Elem<T>::bits(row + s[e] * ts);
        if (sizeof(T) == 4) w[e] = v;
        else w[e / 2] |= v << (16 * (e % 2));
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// Unpacks a gathered group into token order.
template <typename T, int VEC>
__device__ __forceinline__ void unpack_group(const uint4& v, bool reversed, float (&out)[VEC]) {
    float f[VEC];
    Elem<T>::unpack(v, f);
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = reversed ? f[VEC - 1 - e] : f[e];
}

// Raw bits of element e of a 16-byte vector.
template <typename T>
__device__ __forceinline__ uint32_t elem_bits(const uint4& v, int e) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    return sizeof(T) == 4 ? w[e] : (w[e / 2] >> (16 * (e % 2))) & 0xffffu;
}

template <typename T>
__device__ __forceinline__ void store_staged(T* p, uint32_t bits) {
    if constexpr (sizeof(T) == 4) *reinterpret_cast<uint32_t*>(p) = bits;
    else *reinterpret_cast<unsigned short*>(p) = (unsigned short)bits;
}

// Value j of a run of staged values held as 32-bit words.
template <typename T>
__device__ __forceinline__ float staged_value(const uint32_t* words, int j);
template <>
__device__ __forceinline__ float staged_value<float>(const uint32_t* words, int j) { return __uint_as_float(words[j]); }
template <>
__device__ __forceinline__ float staged_value<__half>(const uint32_t* words, int j) {
    const __half2 h = *reinterpret_cast<const __half2*>(&words[j / 2]);
    return j % 2 ? __high2float(h) : __low2float(h);
}
template <>
__device__ __forceinline__ float staged_value<__nv_bfloat16>(const uint32_t* words, int j) {
    return __uint_as_float(j % 2 ? (words[j / 2] & 0xffff0000u) : (words[j / 2] << 16));
}

// NW consecutive 32-bit words from shared memory (16-byte aligned runs of 4, or 8-byte pairs).
template <int NW>
__device__ __forceinline__ void load_words(const void* p, uint32_t (&out)[NW]) {
    static_assert(NW % 4 == 0 || NW == 2, "whole 8- or 16-byte loads");
    if constexpr (NW == 2) {
        const uint2 v = *reinterpret_cast<const uint2*>(p);
        out[0] = v.x; out[1] = v.y;
    } else {
#pragma unroll
        for (int q = 0; q < NW; q += 4) {
            const uint4 v = reinterpret_cast<const uint4*>(p)[q / 4];
            out[q] = v.x; out[q + 1] = v.y; out[q + 2] = v.z; out[q + 3] = v.w;
        }
    }
}

template <typename T, int VEC>
__device__ __forceinline__ void scatter(T* row, const int (&s)[VEC], int kind, const uint4& v) {
    if (kind == RUN_ASC) { st_stream(row + s[0], v); return; }
    if (kind == RUN_DESC) { st_stream(row + s[VEC - 1], reverse16<T>(v)); return; }
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        if (s[e] < 0) continue;
        Elem<T>::store_bits(row + s[e], elem_bits<T>(v, e));
    }
}

// ---- the kernel ------------------------------------------------------------------------------
enum : int { MODE_OUT = 0, MODE_STATE = 1 };

// Storage position of token t (mambacsr_order_source / _target) of a one-group order. Not
// inlined: the index arithmetic (64-bit divisions) would otherwise share the register budget
// of the scan loop, and it runs once per token of a tile.
__device__ __noinline__ int order_index(const mambacsr_scan_order_t& o, int64_t t, int64_t length, int target) {
    return (int)(target ? mambacsr_order_target(&o, 0, t, length) : mambacsr_order_source(&o, 0, t, length));
}

struct Params {
    const void* u;
    const void* delta;
    const float* A;
    const void* B;
    const void* C;
    const float* D;
    const float* bias;
    void* y;
    float* ws_h;        // chunked: end state of chunk i, (chunk, batch * KC, N)
    float* ws_dt;       // chunked: sum of dt over chunk i, (chunk, batch * KC)
    const int* ws_idx;  // token positions precomputed by order_table_kernel, (K, maps, idx_len); or null
    int64_t idx_len;
    int64_t L;          // storage length
    int64_t chunk_len;  // tokens per chunk, a multiple of NT / SEG; single pass: >= every seq_len
    int n_chunks;
    int batch;
    int kc;
    int k;
    int n;
    int ch_per_group;
    int n_cblocks;
    int softplus;
    int vec_in;         // inputs: token stride 1, every row 16-byte aligned (vector gathers)
    int tok_in;         // inputs are token rows (channel and state stride 1, 16-byte aligned):
                        // one vector = VEC channels or states of one token
    int vec_out;        // channel-row y: every row 16-byte aligned (vector scatters)
    int64_t su[3];      // element strides of u (batch, channel, token), delta, Bs, Cs
    int64_t sd[3];      // (batch, group, state, token): contiguous, or views such as token rows
    int64_t sb[4];
    int64_t sc[4];
    int u_shared;
    int y_tokens;       // y as token rows (batch, K, L, C) instead of channel rows (batch, KC, L)
    int y_vec;          // token rows start 16-byte aligned (C a multiple of VEC, y aligned)
    int tables;         // token positions through shared-memory tables (WINDOW, CROSS_SCALE)
    int two_maps;       // target differs from source (CROSS_SCALE)
    mambacsr_scan_order_t order;
};

// STRIDED: inputs with any strides (p.su/sd/sb/sc, token-row loads where p.tok_in). The
// contiguous instantiation folds the strides to storage order's (rows of L, tokens of 1) and has
// no token-row path, so contiguous calls run the code they ran before strided inputs existed
// (that code in every call cost fp32 up to 1.35x: NOTES.md, part 6).
template <typename T, int R, int S, int W, int CB, int NT, int SEG, int MINB, int MODE, bool STRIDED>
__global__ void __launch_bounds__(W * CB * SEG / R, MINB)
scan_kernel(const Params p) {
    constexpr bool OUT = MODE == MODE_OUT;
    constexpr int THREADS = W * CB * SEG / R;
    constexpr int QT = NT / SEG;  // tokens of each segment per tile
    constexpr int NMAX = S * W;
    constexpr int VEC = 16 / int(sizeof(T));
    constexpr int PA = NT + 8;  // pitch of the per-channel arrays (bank spread for the y writes)
    // Pitch of the B/C arrays in elements: 16-byte rows, conflict-free 16-byte reads by the W
    // lanes of a channel (rows 4 banks apart).
    constexpr int PB = sizeof(T) == 4 ? NT + 4 : NT + 8;
    constexpr int BW = W * int(sizeof(T)) / 4;  // 32-bit words of one block's B (C) per state
    constexpr int VPR = NT / VEC;
    constexpr int NV_U = CB * VPR;
    constexpr int IT_U = (NV_U + THREADS - 1) / THREADS;
    constexpr int IT_B = (NMAX * VPR + THREADS - 1) / THREADS;
    static_assert(W == 4 || W == 8 || W == 16, "W must be 4, 8 or 16");
    static_assert(QT % W == 0 && NT % VEC == 0, "tile size");
    static_assert(SEG == 1 || SEG % VEC == 0, "a staged token group lies in one tile row of the segments");
    static_assert(THREADS % 32 == 0 && CB % R == 0, "whole warps, whole channel groups");
    static_assert(THREADS % VPR == 0, "a thread stages the same token group of every row");
    static_assert(CB % VEC == 0, "token-row output: whole 16-byte vectors of the block's channels");
    using E = Elem<T>;

    __shared__ __align__(16) float sDt[CB * PA];
    __shared__ __align__(16) float sDtu[CB * PA];
    // y staged per tile, two buffers (tile parity): token-row output reads other threads' staged
    // values, which the next tile's prep would otherwise overwrite before they are read.
    constexpr int SY = CB * PA;
    __shared__ __align__(16) float sY[OUT ? 2 * SY : 4];
    // B and C are staged in the I/O type, as loaded: exact, and for 16-bit I/O half the
    // shared-memory reads of the scan loop's largest operands (NOTES.md part 11). The loop reads
    // them as 32-bit words (staged_value converts at use).
    __shared__ __align__(16) T sB[NMAX * PB];
    __shared__ __align__(16) T sC[OUT ? NMAX * PB : 8];
    __shared__ __align__(16) int sIdx[3][2][NT];  // [tile % 3][source, target][token]

    const int tid = threadIdx.x;
    int blk = blockIdx.x;
    const int cb = blk % p.n_cblocks;
    blk /= p.n_cblocks;
    const int g = blk % p.k;
    blk /= p.k;
    const int b = blk % p.batch;
    const int chunk0 = (blk / p.batch) * SEG;  // the block's first chunk
    const int ch_first = cb * CB;
    const int c_first = g * p.ch_per_group + ch_first;
    const int nch = min(CB, p.ch_per_group - ch_first);
    const int N = p.n;
    const int64_t L = p.L;

    // This group's order as group 0 of its own (a constant index keeps it in registers).
    // (Selected without a run-time index into the parameter struct, which would copy it to
    // local memory; groups past MAMBACSR_SCAN_MAX_GROUPS only exist for the identity order.)
    mambacsr_scan_order_t og = p.order;
#pragma unroll
    for (int i = 1; i < MAMBACSR_SCAN_MAX_GROUPS; ++i) {
        if (i == g) {
            og.window[0] = p.order.window[i];
            og.flags[0] = p.order.flags[i];
        }
    }
    if (g >= MAMBACSR_SCAN_MAX_GROUPS) og.flags[0] = 0;
    mambacsr_scan_order_t oid = og;  // the identity order, its kind a compile-time constant
    oid.kind = MAMBACSR_ORDER_IDENTITY;
    const int64_t seq = mambacsr_order_seq_len(&og, 0, L);
    const int64_t clen = p.chunk_len;
    const int64_t t_begin = (int64_t)chunk0 * clen;  // the block's first token
    if (t_begin >= seq) return;
    // Tiles: SEG == 1: NT consecutive tokens of one chunk; SEG > 1: QT consecutive tokens of each
    // of SEG consecutive chunks, tile position i = q * SEG + segment (segments fastest, so that
    // VEC adjacent positions are the same token of adjacent chunks: adjacent columns of a
    // column-first window).
    const int64_t block_len = min(seq - t_begin, clen);  // the first segment is the longest
    const int ntiles = (int)((block_len + QT - 1) / QT);
    auto token_of = [&](int tile, int i) -> int64_t {  // sequence token at tile position i; -1: none
        const int seg_i = SEG == 1 ? 0 : i % SEG;
        const int64_t off = (int64_t)tile * QT + (SEG == 1 ? i : i / SEG);
        const int64_t t = (int64_t)(chunk0 + seg_i) * clen + off;
        return (off < clen && t < seq) ? t : -1;
    };
    auto spos = [&](int i) { return SEG == 1 ? i : (i % SEG) * QT + i / SEG; };  // scan layout

    const int64_t row0 = ((int64_t)b * p.kc + c_first) * L;
    const int64_t urow0 = p.u_shared ? ((int64_t)b * p.ch_per_group + ch_first) * L : row0;
    const int64_t brow0 = ((int64_t)b * p.k + g) * N * L;
    const T* __restrict__ u = static_cast<const T*>(p.u) +
        (STRIDED ? b * p.su[0] + (p.u_shared ? ch_first : c_first) * p.su[1] : urow0);
    const T* __restrict__ dl = static_cast<const T*>(p.delta) + (STRIDED ? b * p.sd[0] + c_first * p.sd[1] : row0);
    T* __restrict__ y = static_cast<T*>(p.y) + row0;
    const T* __restrict__ Bp = static_cast<const T*>(p.B) + (STRIDED ? b * p.sb[0] + g * p.sb[1] : brow0);
    const T* __restrict__ Cp = static_cast<const T*>(p.C) + (STRIDED ? b * p.sc[0] + g * p.sc[1] : brow0);
    // Row and token strides of the channel-row loads (compile-time L and 1 when contiguous).
    const int64_t u_row = STRIDED ? p.su[1] : L, u_tok = STRIDED ? p.su[2] : 1;
    const int64_t d_row = STRIDED ? p.sd[1] : L, d_tok = STRIDED ? p.sd[2] : 1;
    const int64_t b_row = STRIDED ? p.sb[2] : L, b_tok = STRIDED ? p.sb[3] : 1;
    const int64_t c_row = STRIDED ? p.sc[2] : L, c_tok = STRIDED ? p.sc[3] : 1;
    const int64_t bkc = (int64_t)p.batch * p.kc;
    const int64_t ws0 = (int64_t)b * p.kc + c_first;  // workspace row of the block's channel 0

    // Scan role: segment `seg`, channels cg * R .. cg * R + R - 1 of the block, lane w of their
    // W lanes, states s * W + w.
    const int w = tid % W;
    const int seg = (tid / W) / (CB / R);
    const int cg = (tid / W) % (CB / R);
    const int chunk = chunk0 + seg;
    const bool seg_live = (int64_t)chunk * clen < seq;
    float A2[R][S], h[R][S];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int row = cg * R + r;
#pragma unroll
        for (int s = 0; s < S; ++s) {
            const int n = s * W + w;
            A2[r][s] = (row < nch && n < N) ? p.A[(int64_t)(c_first + row) * N + n] * kLog2e : 0.f;
            h[r][s] = 0.f;
        }
    }
    if (OUT && chunk > 0 && seg_live) {
        // Carry in: fold the end states of the chunks before this one, FOLD chunks' loads in
        // flight at a time (the fold is latency-bound: a few dependent round trips).
        constexpr int FOLD = 8;
#pragma unroll 1
        for (int i0 = 0; i0 < chunk; i0 += FOLD) {
            float dv[FOLD][R], hv[FOLD][R][S];
#pragma unroll
            for (int q = 0; q < FOLD; ++q) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const int row = cg * R + r;
                    const bool ok = i0 + q < chunk && row < nch;
                    const int64_t wrow = (int64_t)(i0 + q) * bkc + ws0 + row;
                    dv[q][r] = ok ? p.ws_dt[wrow] : 0.f;
#pragma unroll
                    for (int s = 0; s < S; ++s) {
                        const int n = s * W + w;
                        hv[q][r][s] = (ok && n < N) ? p.ws_h[wrow * N + n] : 0.f;
                    }
                }
            }
#pragma unroll
            for (int q = 0; q < FOLD; ++q)
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int s = 0; s < S; ++s)
                        h[r][s] = fmaf(exp2_approx(dv[q][r] * A2[r][s]), h[r][s], hv[q][r][s]);
        }
    }
    // Padding states (n >= N) read B = C = 0 forever.
    for (int i = tid; i < (NMAX - N) * PB; i += THREADS) {
        store_staged(sB + N * PB + i, 0u);
        if (OUT) store_staged(sC + N * PB + i, 0u);
    }

    // Token positions. Positions past a chunk's end read as virtual (-1) and are never
    // written; prep_regs also zeroes their dt, so they leave the state alone.
    const int col = (tid % VPR) * VEC;  // this thread's token group in every tile and row
    // Index tables of tile + 2: fetched (precomputed table in the workspace) or computed before
    // the tile's scan, stored to shared memory after it, so their latency hides behind the scan.
    constexpr int IT_I = (2 * NT + THREADS - 1) / THREADS;
    const int maps = p.two_maps ? 2 : 1;
    int idx_reg[IT_I];
    auto fetch_idx = [&](int tile) {
        if (!p.tables || tile >= ntiles) return;
#pragma unroll
        for (int q = 0; q < IT_I; ++q) {
            const int i = tid + q * THREADS;
            if (i >= maps * NT) continue;
            const int which = i >= NT;
            const int64_t t = token_of(tile, i % NT);
            idx_reg[q] = t < 0 ? -1
                         : p.ws_idx ? __ldg(p.ws_idx + ((int64_t)g * maps + which) * p.idx_len + t)
                                    : order_index(og, t, L, which);
        }
    };
    auto commit_idx = [&](int tile) {
        if (!p.tables || tile >= ntiles) return;
#pragma unroll
        for (int q = 0; q < IT_I; ++q) {
            const int i = tid + q * THREADS;
            if (i < maps * NT) sIdx[tile % 3][0][i] = idx_reg[q];  // [source | target] rows
        }
    };
    auto group_idx = [&](int tile, bool target, int (&s)[VEC]) {
        if (p.tables) {
            const int* q = &sIdx[tile % 3][(target && p.two_maps) ? 1 : 0][col];
#pragma unroll
            for (int e = 0; e < VEC; e += 4) {
                const int4 v = *reinterpret_cast<const int4*>(q + e);
                s[e] = v.x; s[e + 1] = v.y; s[e + 2] = v.z; s[e + 3] = v.w;
            }
        } else if (SEG == 1) {
            // Identity order: linear in t, so two evaluations give the whole group.
            const int64_t t0 = t_begin + (int64_t)tile * NT + col;
            const int s0 = (int)mambacsr_order_source(&oid, 0, t0, L);
            const int step = (int)mambacsr_order_source(&oid, 0, t0 + 1, L) - s0;
            const int left = (int)min((int64_t)VEC, t_begin + block_len - t0);
#pragma unroll
            for (int e = 0; e < VEC; ++e) s[e] = e < left ? s0 + step * e : -1;
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                const int64_t t = token_of(tile, col + e);
                s[e] = t >= 0 ? (int)mambacsr_order_source(&oid, 0, t, L) : -1;
            }
        }
    };

    uint4 ru[IT_U], rd[IT_U], rb[IT_B], rc[OUT ? IT_B : 1];
    bool ld_rev = false;  // the registers hold a descending group (load_regs -> prep_regs)

    // Token-row inputs (p.tok_in): vector vi of a tile is token position vi / VPT (VPS), its
    // channels (states) from (vi % VPT) * VEC on; the same number of vectors as channel rows.
    constexpr int VPT = CB / VEC;
    constexpr int VPS = NMAX / VEC;
    static_assert(NMAX % VEC == 0, "token-row inputs: whole vectors of states");
    auto source_of = [&](int tile, int i) -> int {
        if (p.tables) return sIdx[tile % 3][0][i];
        const int64_t t = token_of(tile, i);
        return t < 0 ? -1 : (int)mambacsr_order_source(&oid, 0, t, L);
    };
    auto load_tokens = [&](int tile) {
        const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int q = 0; q < IT_U; ++q) {
            const int vi = tid + q * THREADS;
            const int c0 = (vi % VPT) * VEC;
            const int sp = (vi < NV_U && c0 < nch) ? source_of(tile, vi / VPT) : -1;
            ru[q] = sp >= 0 ? ld_stream(u + sp * p.su[2] + c0) : zero;
            rd[q] = sp >= 0 ? ld_stream(dl + sp * p.sd[2] + c0) : zero;
        }
#pragma unroll
        for (int q = 0; q < IT_B; ++q) {
            const int vi = tid + q * THREADS;
            const int n0 = (vi % VPS) * VEC;
            const int sp = (vi < NT * VPS && n0 < N) ? source_of(tile, vi / VPS) : -1;
            rb[q] = sp >= 0 ? ld_shared_input(Bp + sp * p.sb[3] + n0) : zero;
            if (OUT) rc[OUT ? q : 0] = sp >= 0 ? ld_shared_input(Cp + sp * p.sc[3] + n0) : zero;
        }
    };
    auto load_regs = [&](int tile) {
        if (STRIDED && p.tok_in) {
            load_tokens(tile);
            return;
        }
        int s[VEC];
        group_idx(tile, false, s);
        const int kind = run_kind<VEC>(s, p.vec_in != 0);
        ld_rev = kind == RUN_DESC;
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR;
            if (vi < NV_U && row < nch) {
                ru[i] = gather<T, VEC, true>(u + row * u_row, s, kind, u_tok);
                rd[i] = gather<T, VEC, true>(dl + row * d_row, s, kind, d_tok);
            }
        }
#pragma unroll
        for (int i = 0; i < IT_B; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR;
            if (vi < N * VPR) {
                rb[i] = gather<T, VEC, false>(Bp + row * b_row, s, kind, b_tok);
                if (OUT) rc[OUT ? i : 0] = gather<T, VEC, false>(Cp + row * c_row, s, kind, c_tok);
            }
        }
    };
    // Writes VEC values of a row at tile positions col .. col + VEC - 1, in scan layout.
    auto put = [&](float* base, const float (&v)[VEC]) {
        if constexpr (SEG == 1) {
#pragma unroll
            for (int e = 0; e < VEC; e += 4)
                *reinterpret_cast<float4*>(base + col + e) = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) base[spos(col + e)] = v[e];
        }
    };
    // The raw VEC elements of a B or C row at tile positions col .. col + VEC - 1, in scan layout.
    auto put_staged = [&](T* base, const uint4& v) {
        if constexpr (SEG == 1) {
            *reinterpret_cast<uint4*>(base + col) = v;
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) store_staged(base + spos(col + e), elem_bits<T>(v, e));
        }
    };
    // Position col + e holds a token iff its offset in its chunk is below clen and its offset
    // from the block's first token below `rem` (32-bit: both are below the sequence length).
    const int clen32 = (int)clen;
    const int rem = (int)min(seq - t_begin, (int64_t)SEG * clen);
    // Token-row inputs: a thread's VEC channels are the same in every tile (THREADS is a multiple
    // of VPT), so their delta_bias and D are read once.
    static_assert(THREADS % VPT == 0, "a thread's token-row channels are the same in every tile");
    const int tok_c0 = (tid % VPT) * VEC;
    float tok_bias[VEC], tok_D[VEC];
    if (STRIDED && p.tok_in) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            const int c = c_first + min(tok_c0 + e, nch - 1);
            tok_bias[e] = p.bias ? __ldg(p.bias + c) : 0.f;
            tok_D[e] = p.D ? __ldg(p.D + c) : 0.f;
        }
    }
    // Token-row inputs: each vector's VEC channels (states) go to VEC rows of shared memory at
    // its token's column. tok_in guarantees whole vectors (C and N multiples of VEC), so a vector
    // past the block's channels loaded zeros and only needs dt masked. Branch-free per element:
    // the per-channel tests and loads were a third of the batch-8 kernel's instructions
    // (NOTES.md part 9).
    auto prep_tokens = [&](int tile) {
#pragma unroll
        for (int q = 0; q < IT_U; ++q) {
            const int vi = tid + q * THREADS;
            if (NV_U % THREADS != 0 && vi >= NV_U) continue;
            const int i = vi / VPT;
            const int off = tile * QT + (SEG == 1 ? i : i / SEG);
            const bool ok = off < clen32 && (SEG == 1 ? off : (i % SEG) * clen32 + off) < rem;
            bool live[VEC];  // a token of the chunk and a channel of the block
#pragma unroll
            for (int e = 0; e < VEC; ++e) live[e] = ok & (tok_c0 + e < nch);
            float uf[VEC], df[VEC];
            E::unpack(ru[q], uf);
            E::unpack(rd[q], df);
            const int pos = spos(i);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                // Branch-free: softplus always evaluated, then selected (per-element branches
                // kept the elements' dependent chains from overlapping: NOTES.md part 12).
                const int c = tok_c0 + e;
                const float x = df[e] + tok_bias[e];
                const float sp = softplus(x);
                const float dt = live[e] ? (p.softplus ? sp : x) : 0.f;
                sDt[c * PA + pos] = dt;
                sDtu[c * PA + pos] = dt * uf[e];
                if (OUT) sY[(tile & 1) * SY + c * PA + pos] = tok_D[e] * uf[e];
            }
        }
#pragma unroll
        for (int q = 0; q < IT_B; ++q) {
            const int vi = tid + q * THREADS;
            const int n0 = (vi % VPS) * VEC;
            // States from N on loaded zeros (load_tokens), which their rows hold already.
            if ((NT * VPS) % THREADS != 0 && vi >= NT * VPS) continue;
            const int pos = spos(vi / VPS);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                store_staged(sB + (n0 + e) * PB + pos, elem_bits<T>(rb[q], e));
                if (OUT) store_staged(sC + (n0 + e) * PB + pos, elem_bits<T>(rc[OUT ? q : 0], e));
            }
        }
    };
    auto prep_regs = [&](int tile) {
        if (STRIDED && p.tok_in) {
            prep_tokens(tile);
            return;
        }
        bool ok[VEC];  // position holds a token of its chunk
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            const int off = tile * QT + (SEG == 1 ? col + e : col / SEG);
            ok[e] = off < clen32 && (SEG == 1 ? off : ((col + e) % SEG) * clen32 + off) < rem;
        }
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR;
            if (vi < NV_U) {
                float dt[VEC], dtu[VEC], du[VEC];
                if (row < nch) {
                    float uf[VEC], df[VEC];
                    unpack_group<T, VEC>(ru[i], ld_rev, uf);
                    unpack_group<T, VEC>(rd[i], ld_rev, df);
                    const float bias = p.bias ? __ldg(p.bias + c_first + row) : 0.f;
                    const float dskip = p.D ? __ldg(p.D + c_first + row) : 0.f;
#pragma unroll
                    for (int e = 0; e < VEC; ++e) {
                        const float x = df[e] + bias;
                        const float sp = softplus(x);  // branch-free, as in prep_tokens
                        const float d = ok[e] ? (p.softplus ? sp : x) : 0.f;
                        dt[e] = d;
                        dtu[e] = d * uf[e];
                        du[e] = dskip * uf[e];
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) dt[e] = dtu[e] = du[e] = 0.f;
                }
                put(sDt + row * PA, dt);
                put(sDtu + row * PA, dtu);
                if (OUT) put(sY + (tile & 1) * SY + row * PA, du);
            }
        }
#pragma unroll
        for (int i = 0; i < IT_B; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR;
            if (vi < N * VPR) {
                put_staged(sB + row * PB, ld_rev ? reverse16<T>(rb[i]) : rb[i]);
                if (OUT) put_staged(sC + row * PB, ld_rev ? reverse16<T>(rc[OUT ? i : 0]) : rc[OUT ? i : 0]);
            }
        }
    };
    auto output = [&](int tile) {
        int s[VEC];
        group_idx(tile, true, s);
        const int kind = run_kind<VEC>(s, p.vec_out != 0);
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR;
            if (vi < NV_U && row < nch) {
                float v[VEC];
                if constexpr (SEG == 1) {
#pragma unroll
                    for (int e = 0; e < VEC; e += 4) {
                        const float4 f = *reinterpret_cast<const float4*>(sY + (tile & 1) * SY + row * PA + col + e);
                        v[e] = f.x; v[e + 1] = f.y; v[e + 2] = f.z; v[e + 3] = f.w;
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) v[e] = sY[(tile & 1) * SY + row * PA + spos(col + e)];
                }
                scatter<T, VEC>(y + row * L, s, kind, E::pack(v));
            }
        }
    };
    // Token rows: y[b, g, o, c] for the block's CB channels of each token, VEC channels (16 bytes)
    // per store; o = the token's target position (-1: not stored).
    auto target_of = [&](int tile, int i) -> int {
        if (p.tables) return sIdx[tile % 3][p.two_maps ? 1 : 0][i];
        const int64_t t = token_of(tile, i);
        return t < 0 ? -1 : (int)mambacsr_order_source(&oid, 0, t, L);
    };
    auto output_tokens = [&](int tile) {
        constexpr int VPT = CB / VEC;  // vectors per token
        constexpr int IT_Y = (NT * VPT + THREADS - 1) / THREADS;
        const float* ys = sY + (tile & 1) * SY;
        T* yg = static_cast<T*>(p.y) + (int64_t)(b * p.k + g) * L * p.ch_per_group + ch_first;
#pragma unroll
        for (int q = 0; q < IT_Y; ++q) {
            const int vi = tid + q * THREADS;
            const int i = vi / VPT;
            const int c0 = (vi % VPT) * VEC;
            if (vi >= NT * VPT || c0 >= nch) continue;
            const int o = target_of(tile, i);
            if (o < 0) continue;
            float v[VEC];
#pragma unroll
            for (int e = 0; e < VEC; ++e) v[e] = ys[(c0 + e) * PA + spos(i)];
            T* dst = yg + (int64_t)o * p.ch_per_group + c0;
            const uint4 packed = E::pack(v);
            if (p.y_vec && c0 + VEC <= nch) {
                st_stream(dst, packed);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    if (c0 + e >= nch) continue;
                    E::store_bits(dst + e, elem_bits<T>(packed, e));
                }
            }
        }
    };
    float dsum[R];  // MODE_STATE: this lane's share (tokens j = w mod W) of sum(dt) per channel
#pragma unroll
    for (int r = 0; r < R; ++r) dsum[r] = 0.f;
    const int sbase = seg * QT;  // the segment's columns in the scan layout
    // One block of W tokens (j0 .. j0 + W - 1 of the segment) from shared memory into registers:
    // dt and dt * u of the thread's R channels, B and C of its S states.
    struct Block {
        float dt[R][W], dtu[R][W];
        uint32_t b[S][BW], c[OUT ? S : 1][BW];  // staged values (staged_value)
    };
    auto load_block = [&](int j0, Block& k) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float* dtRow = sDt + (cg * R + r) * PA + sbase + j0;
            const float* dtuRow = sDtu + (cg * R + r) * PA + sbase + j0;
#pragma unroll
            for (int q = 0; q < W; q += 4) {
                const float4 a = *reinterpret_cast<const float4*>(dtRow + q);
                const float4 c = *reinterpret_cast<const float4*>(dtuRow + q);
                k.dt[r][q] = a.x; k.dt[r][q + 1] = a.y; k.dt[r][q + 2] = a.z; k.dt[r][q + 3] = a.w;
                k.dtu[r][q] = c.x; k.dtu[r][q + 1] = c.y; k.dtu[r][q + 2] = c.z; k.dtu[r][q + 3] = c.w;
            }
        }
#pragma unroll
        for (int s = 0; s < S; ++s) {
            load_words<BW>(sB + (s * W + w) * PB + sbase + j0, k.b[s]);
            if (OUT) load_words<BW>(sC + (s * W + w) * PB + sbase + j0, k.c[OUT ? s : 0]);
        }
    };
    // The recurrence over one block; part[r][j]: this lane's share of y (its S states) per token.
    auto scan_block = [&](const Block& k, float (&part)[R][W]) {
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int j = 0; j < W; ++j) part[r][j] = 0.f;
#pragma unroll
        for (int s = 0; s < S; ++s) {
#pragma unroll
            for (int j = 0; j < W; ++j) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const float a = exp2_approx(k.dt[r][j] * A2[r][s]);
                    h[r][s] = fmaf(a, h[r][s], k.dtu[r][j] * staged_value<T>(k.b[s], j));
                    if (OUT) part[r][j] = fmaf(staged_value<T>(k.c[OUT ? s : 0], j), h[r][s], part[r][j]);
                }
            }
        }
    };
    // Transpose-reduce over the W lanes of the channel group: afterwards lane w holds the sum
    // over all N states for token j0 + w of each of its R channels, added to the staged D * u.
    auto reduce_block = [&](float* sYt, int j0, float (&part)[R][W]) {
#pragma unroll
        for (int off = W / 2; off >= 1; off /= 2) {
            const bool hi = (w & off) != 0;
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
                for (int i = 0; i < off; ++i) {
                    const float send = hi ? part[r][i] : part[r][i + off];
                    const float keep = hi ? part[r][i + off] : part[r][i];
                    part[r][i] = keep + __shfl_xor_sync(kFullMask, send, off);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) sYt[(cg * R + r) * PA + sbase + j0 + w] += part[r][0];
    };
    auto scan_tile = [&](int tile) {
        float* const sYt = sY + (OUT ? (tile & 1) * SY : 0);
        if (!OUT) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int j0 = 0; j0 < QT; j0 += W) dsum[r] += sDt[(cg * R + r) * PA + sbase + j0 + w];
        }
        // Software-pipelined: the next block's shared-memory reads are issued before this
        // block's recurrence (waiting on them was the largest stall, NOTES.md part 9). The last
        // block re-reads block 0, harmlessly, so that no read leaves the tile. Unrolled over the
        // whole tile (2-16 blocks): with a loop back-edge the compiler sank the reads of the
        // block after it down to the branch.
        Block cur, nxt;
        load_block(0, cur);
#pragma unroll
        for (int j0 = 0; j0 < QT; j0 += W) {
            load_block(j0 + W < QT ? j0 + W : 0, nxt);
            float part[R][W];
            scan_block(cur, part);
            if constexpr (OUT) reduce_block(sYt, j0, part);
            cur = nxt;
        }
    };

    // Pipeline: indices two tiles ahead (three buffers), global loads one tile ahead (registers).
    // Two barriers per tile; the staged y of tile + 1 goes to the other buffer, whose last
    // readers (tile - 1's output) passed this tile's first barrier, and the index buffer a
    // thread overwrites was last read before the previous barrier.
    fetch_idx(0);
    commit_idx(0);
    fetch_idx(1);
    commit_idx(1);
    if (p.tables) __syncthreads();
    load_regs(0);
    prep_regs(0);
    if (ntiles > 1) load_regs(1);
    for (int tile = 0; tile < ntiles; ++tile) {
        __syncthreads();  // tile's inputs are in shared memory
        fetch_idx(tile + 2);
        scan_tile(tile);
        commit_idx(tile + 2);
        __syncthreads();  // tile's outputs are complete (and tile + 2's indices)
        if (OUT) {
            if (p.y_tokens) output_tokens(tile);
            else output(tile);
        }
        if (tile + 1 < ntiles) {
            prep_regs(tile + 1);
            if (tile + 2 < ntiles) load_regs(tile + 2);
        }
    }

    if (!OUT) {
        // End state and sum(dt) of this chunk, for the carry of the chunks after it.
        const bool keep = seg_live && chunk < p.n_chunks - 1;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int row = cg * R + r;
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const int n = s * W + w;
                if (keep && row < nch && n < N) p.ws_h[((int64_t)chunk * bkc + ws0 + row) * N + n] = h[r][s];
            }
            float v = dsum[r];
#pragma unroll
            for (int off = W / 2; off >= 1; off /= 2) v += __shfl_xor_sync(kFullMask, v, off);
            if (keep && w == 0 && row < nch) p.ws_dt[(int64_t)chunk * bkc + ws0 + row] = v;
        }
    }
}

// Token positions of every group (source, and target for CROSS_SCALE), once per call into the
// workspace: the scan kernels then load each tile's positions instead of computing them in
// every block (the index arithmetic is ~100 instructions per token).
__global__ void order_table_kernel(const mambacsr_scan_order_t o, int k, int maps, int64_t L,
                                   int64_t idx_len, int* out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)k * maps * idx_len) return;
    const int64_t t = i % idx_len;
    const int which = (int)((i / idx_len) % maps);
    const int g = (int)(i / (idx_len * maps));
    mambacsr_scan_order_t og = o;
#pragma unroll
    for (int j = 1; j < MAMBACSR_SCAN_MAX_GROUPS; ++j) {
        if (j == g) {
            og.window[0] = o.window[j];
            og.flags[0] = o.flags[j];
        }
    }
    out[i] = t < mambacsr_order_seq_len(&og, 0, L) ? order_index(og, t, L, which) : -1;
}

// Maps per group of an order's tables: source positions, plus target positions (CROSS_SCALE).
int order_maps(const mambacsr_scan_order_t& o) { return o.kind == MAMBACSR_ORDER_CROSS_SCALE ? 2 : 1; }

// Bytes of an order's tables for K groups of seq_max positions (0 for the identity order).
size_t order_table_bytes(const mambacsr_scan_order_t* o, int64_t k, int64_t seq_max) {
    if (!o || o->kind == MAMBACSR_ORDER_IDENTITY) return 0;
    return (size_t)(k * order_maps(*o) * seq_max) * sizeof(int);
}

// The tables written by order_table_kernel: per call into the workspace (run_plan), or once for
// the caller (mambacsr_scan_order_tables).
cudaError_t write_order_tables(const mambacsr_scan_order_t& o, int64_t k, int64_t length, int64_t seq_max,
                               int* out, cudaStream_t stream) {
    const int maps = order_maps(o);
    const int64_t total = k * maps * seq_max;
    order_table_kernel<<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(o, (int)k, maps, length, seq_max, out);
    return cudaGetLastError();
}

// ---- variants -------------------------------------------------------------------------------
// R channels x S states per thread, W threads per channel group (N <= S * W), CB channels per
// block, NT tokens per tile, SEG chunks per block, at least MINB resident blocks per SM (a
// register cap: it keeps ptxas from trading occupancy for registers). Per (thread, token):
// 2R + 2S shared-memory reads for R * S exps.
struct Variant {
    const char* name;
    int r, s, w, cb, nt, seg;
};

#define MAMBACSR_VARIANTS(X)      \
    X(1, 1, 2, 8, 16, 64, 1, 3)   \
    X(2, 2, 4, 4, 32, 32, 1, 1)   \
    X(3, 1, 4, 4, 32, 64, 1, 3)   \
    X(4, 1, 4, 8, 16, 64, 1, 1)   \
    X(5, 1, 8, 8, 16, 32, 1, 1)   \
    X(6, 2, 8, 8, 32, 32, 1, 1)   \
    X(7, 1, 4, 4, 8, 64, 8, 2)

constexpr int kNumVariants = 7;
constexpr int kSegVariant = 7;  // chunked, 8 adjacent chunks per block
const Variant kVariants[kNumVariants + 1] = {
    {"auto", 0, 0, 0, 0, 0, 0},
#define X(id, R, S, W, CB, NT, SEG, MINB) \
    {"R" #R "_S" #S "_W" #W "_CB" #CB "_NT" #NT "_SEG" #SEG, R, S, W, CB, NT, SEG},
    MAMBACSR_VARIANTS(X)
#undef X
};

template <typename T, bool STRIDED>
cudaError_t launch_variant(int variant, int mode, const Params& p, int grid, cudaStream_t stream) {
    switch (variant) {
#define X(id, R, S, W, CB, NT, SEG, MINB)                                                              \
    case id:                                                                                     \
        if (mode == MODE_OUT)                                                                    \
            scan_kernel<T, R, S, W, CB, NT, SEG, MINB, MODE_OUT, STRIDED><<<grid, W * CB * SEG / R, 0, stream>>>(p); \
        else                                                                                     \
            scan_kernel<T, R, S, W, CB, NT, SEG, MINB, MODE_STATE, STRIDED><<<grid, W * CB * SEG / R, 0, stream>>>(p); \
        break;
        MAMBACSR_VARIANTS(X)
#undef X
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_variant(int variant, int mode, const Params& p, bool strided, int grid, cudaStream_t stream) {
    return strided ? launch_variant<T, true>(variant, mode, p, grid, stream)
                   : launch_variant<T, false>(variant, mode, p, grid, stream);
}

// Resident blocks per SM of one kernel (both passes: the fewer), for the chunk count. Of the
// contiguous instantiation: the plan does not know the strides (a strided call may fit fewer).
template <typename T>
int blocks_per_sm(int variant) {
    int a = 0, b = 0;
    switch (variant) {
#define X(id, R, S, W, CB, NT, SEG, MINB)                                                                        \
    case id:                                                                                               \
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&a, scan_kernel<T, R, S, W, CB, NT, SEG, MINB, MODE_OUT, false>, \
                                                          W * CB * SEG / R, 0) != cudaSuccess ||           \
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, scan_kernel<T, R, S, W, CB, NT, SEG, MINB, MODE_STATE, false>, \
                                                          W * CB * SEG / R, 0) != cudaSuccess)             \
            a = b = 0;                                                                                     \
        break;
        MAMBACSR_VARIANTS(X)
#undef X
        default: break;
    }
    (void)cudaGetLastError();  // a failed query (no device) leaves no sticky error behind
    const int m = a < b ? a : b;
    return m > 0 ? m : 1;
}

int current_device() {
    int dev = 0;
    return cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < 64 ? dev : 0;
}

int sm_count() {
    static int cached[64] = {0};
    const int dev = current_device();
    if (cached[dev]) return cached[dev];
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    (void)cudaGetLastError();
    cached[dev] = n;
    return n;
}

int occupancy(int variant, int dtype) {
    static int cached[64][3][kNumVariants + 1] = {};
    int& c = cached[current_device()][dtype][variant];
    if (!c) {
        c = dtype == MAMBACSR_FLOAT32   ? blocks_per_sm<float>(variant)
            : dtype == MAMBACSR_FLOAT16 ? blocks_per_sm<__half>(variant)
                                        : blocks_per_sm<__nv_bfloat16>(variant);
    }
    return c;
}

int64_t variant_blocks(int id, int64_t batch, int64_t k, int64_t ch_per_group) {
    return batch * k * ((ch_per_group + kVariants[id].cb - 1) / kVariants[id].cb);
}

int64_t variant_warps(int id, int64_t batch, int64_t k, int64_t ch_per_group) {
    const Variant& v = kVariants[id];
    return variant_blocks(id, batch, k, ch_per_group) * (v.w * v.cb / v.r) / 32;
}

// Single pass, first choice (it also decides single pass against chunked, by its warps): one
// channel, 2 states per thread, the most warps. N > 32: the 2-channel x 8-state variant from
// ~2 of its warps per SM sub-partition.
int choose_single_variant(int64_t batch, int64_t k, int64_t ch_per_group, int64_t n) {
    const int64_t sms = sm_count();
    if (n <= 16) return 1;
    if (n <= 32) return 4;
    return variant_warps(6, batch, k, ch_per_group) >= 8 * sms ? 6 : 5;
}

// Single pass with N <= 16 and the GPU more than full: R1_S2_W8 (id 1) or R1_S4_W4 (id 3),
// whichever takes fewer waves at its cost per wave. A block of id 3 scans twice the channels
// with fewer instructions per state-token, and a full wave of it takes about 1.7x as long
// (16-bit I/O; float32 1.9-2.4x): H100, fp16, 0.448 against 0.265 ms. So id 3 wins where id 1
// needs a second wave and id 3 does not (Final x4 fp16: batches 9-16, 1.14-1.38x), or 4 against 2
// (batch 32); measured per batch in NOTES.md, part 10.
int refine_single_variant(int id, int64_t batch, int64_t k, int64_t ch_per_group, int dtype) {
    if (id != 1) return id;
    const int64_t sms = sm_count();
    const int64_t slots1 = occupancy(1, dtype) * sms, slots3 = occupancy(3, dtype) * sms;
    const int64_t waves1 = (variant_blocks(1, batch, k, ch_per_group) + slots1 - 1) / slots1;
    const int64_t waves3 = (variant_blocks(3, batch, k, ch_per_group) + slots3 - 1) / slots3;
    const int64_t wave3_cost_x10 = dtype == MAMBACSR_FLOAT32 ? 20 : 17;  // one id-1 wave = 10
    return waves3 * wave3_cost_x10 < waves1 * 10 ? 3 : 1;
}

// Chunked passes: the parallelism comes from the chunks, so the fewest lanes per channel.
int choose_chunked_variant(int64_t n) { return n <= 16 ? 3 : n <= 32 ? 4 : 5; }

// Below this many single-pass warps per SM the chunked passes win (twice the exps, but the
// GPU is full; NOTES.md).
constexpr int64_t kSingleWarpsPerSm = 8;

// Column-first windows of >= 32 rows (c_w64 on a 64 x 64 tile: the transpose) read one element
// per storage row and token in a plain tile. Chunks of one window column, 8 adjacent columns
// per block (kSegVariant), read rows of 8 contiguous elements instead; worth the chunked
// passes' second exp at any batch (NOTES.md).
int64_t column_chunk(const mambacsr_scan_order_t* o, int64_t k) {
    if (!o || o->kind != MAMBACSR_ORDER_WINDOW) return 0;
    const int32_t w = o->window[0];
    if (w < 32 || w % 8) return 0;
    for (int64_t g = 0; g < k; ++g)
        if (o->window[g] != w || !(o->flags[g] & MAMBACSR_ORDER_COLUMN_FIRST)) return 0;
    return w;
}

struct Plan {
    int variant;
    int64_t chunks;     // 1: single pass
    int64_t chunk_len;
    int64_t seq_max;
    size_t ws_bytes;    // workspace of the chunk states (0 for a single pass) ...
    size_t table_bytes; // ... plus that of the index tables (0 for the identity order)
};

size_t chunk_workspace(int64_t chunks, int64_t batch, int64_t kc, int64_t n) {
    return chunks > 1 ? (size_t)(chunks - 1) * (size_t)(batch * kc) * (size_t)(n + 1) * sizeof(float) : 0;
}

// Validates the arguments and resolves `variant` (kernel id | chunks << 8; 0 = automatic).
int make_plan(int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
              const mambacsr_scan_order_t* order, int dtype, int variant, Plan* plan) {
    if (batch < 0 || kc < 0 || k <= 0 || n <= 0 || length < 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (kc % k != 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (n > MAMBACSR_SCAN_MAX_STATES) return MAMBACSR_ERR_UNSUPPORTED;
    if (dtype != MAMBACSR_FLOAT32 && dtype != MAMBACSR_FLOAT16 && dtype != MAMBACSR_BFLOAT16)
        return MAMBACSR_ERR_UNSUPPORTED;
    const int id_req = variant & 0xff;
    const int64_t chunks_req = variant >> 8;
    if (variant < 0 || id_req > kNumVariants) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (order && mambacsr_order_check(order, k, length) != 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (kc > INT32_MAX / 2 || batch * k > INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;
    const int64_t seq_max = order ? mambacsr_order_max_seq_len(order, k, length) : length;
    if (seq_max >= INT32_MAX || length >= INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;

    const int64_t ch_per_group = kc / k;
    plan->seq_max = seq_max;
    plan->ws_bytes = 0;
    plan->table_bytes = 0;
    if (batch == 0 || kc == 0 || length == 0) {  // a no-op: no device queries
        plan->variant = id_req ? id_req : 1;
        plan->chunks = 1;
        plan->chunk_len = 1;
        return MAMBACSR_OK;
    }
    const int64_t col = column_chunk(order, k);
    int id = id_req;
    int64_t chunks = chunks_req;
    int64_t chunk_len = 0;
    if (!id && !chunks && col && seq_max / col > 1 && n <= kVariants[kSegVariant].s * kVariants[kSegVariant].w) {
        id = kSegVariant;
        chunk_len = col;
        chunks = (seq_max + col - 1) / col;
    }
    if (!id) id = chunks > 1 ? choose_chunked_variant(n) : choose_single_variant(batch, k, ch_per_group, n);
    if (chunks == 0) {
        chunks = 1;
        const int64_t sms = sm_count();
        if (variant_warps(id, batch, k, ch_per_group) < kSingleWarpsPerSm * sms) {
            // One wave of both passes' blocks (measured: wave tails cost more than the chunk
            // length saves).
            const int cid = id_req ? id_req : choose_chunked_variant(n);
            const Variant& cv = kVariants[cid];
            const int64_t per_chunk = variant_blocks(cid, batch, k, ch_per_group);
            const int64_t want = occupancy(cid, dtype) * sms * cv.seg / per_chunk;
            const int64_t most = seq_max / (2 * (cv.nt / cv.seg));  // chunks of >= 2 tiles
            if (want > 1 && most > 1) {
                id = cid;
                chunks = want < most ? want : most;
            }
        }
    }
    if (!id_req && chunks == 1) id = refine_single_variant(id, batch, k, ch_per_group, dtype);
    const Variant& v = kVariants[id];
    if (n > v.s * v.w) return MAMBACSR_ERR_UNSUPPORTED;
    const int64_t unit = v.nt / v.seg;  // chunk lengths are whole tiles of one segment
    const int64_t tiles = (seq_max + unit - 1) / unit;
    if (chunks > tiles) chunks = tiles > 0 ? tiles : 1;
    if (!chunk_len) chunk_len = chunks > 1 ? ((tiles + chunks - 1) / chunks) * unit : seq_max;
    chunks = (seq_max + chunk_len - 1) / chunk_len;
    plan->variant = id;
    plan->chunks = chunks;
    plan->chunk_len = chunk_len;
    plan->ws_bytes = chunk_workspace(chunks, batch, kc, n);
    plan->table_bytes = order_table_bytes(order, k, seq_max);
    return MAMBACSR_OK;
}

bool aligned16(const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; }

// Workspace layout: chunk end states, chunk sums of dt, then (from a 256-byte boundary) the
// index tables. Tables are optional: without room for them the kernels compute positions.
size_t table_offset(const Plan& plan) { return (plan.ws_bytes + 255) / 256 * 256; }
size_t full_workspace(const Plan& plan) {
    return plan.table_bytes ? table_offset(plan) + plan.table_bytes : plan.ws_bytes;
}

// The strides of the storage-order contract (contiguous u, delta, Bs, Cs).
mambacsr_scan_strides_t storage_strides(int64_t kc, int64_t k, int64_t n, int64_t length, int layout) {
    const int64_t cu = (layout & MAMBACSR_LAYOUT_U_SHARED) ? kc / k : kc;
    return mambacsr_scan_strides_t{{cu * length, length, 1}, {kc * length, length, 1},
                                   {k * n * length, n * length, length, 1}, {k * n * length, n * length, length, 1}};
}

bool same_strides(const mambacsr_scan_strides_t& a, const mambacsr_scan_strides_t& b) {
    for (int i = 0; i < 3; ++i)
        if (a.u[i] != b.u[i] || a.delta[i] != b.delta[i]) return false;
    for (int i = 0; i < 4; ++i)
        if (a.B[i] != b.B[i] || a.C[i] != b.C[i]) return false;
    return true;
}

int run_plan(const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
             const float* D, const float* delta_bias, void* y, int64_t batch, int64_t kc,
             int64_t k, int64_t n, int64_t length, int layout, const mambacsr_scan_strides_t& st,
             const mambacsr_scan_order_t* order, int dtype, int delta_softplus,
             const Plan& plan, void* workspace, bool use_tables, const int* given_tables,
             cudaStream_t stream) {
    const Variant& v = kVariants[plan.variant];
    const int vec = dtype == MAMBACSR_FLOAT32 ? 4 : 8;
    Params p;
    memset(&p, 0, sizeof(p));
    p.u = u; p.delta = delta; p.A = A; p.B = Bs; p.C = Cs; p.D = D; p.bias = delta_bias; p.y = y;
    p.L = length;
    p.chunk_len = plan.chunk_len;
    p.n_chunks = (int)plan.chunks;
    p.batch = (int)batch;
    p.kc = (int)kc;
    p.k = (int)k;
    p.n = (int)n;
    p.ch_per_group = (int)(kc / k);
    p.n_cblocks = (int)((p.ch_per_group + v.cb - 1) / v.cb);
    p.softplus = delta_softplus ? 1 : 0;
    for (int i = 0; i < 3; ++i) { p.su[i] = st.u[i]; p.sd[i] = st.delta[i]; }
    for (int i = 0; i < 4; ++i) { p.sb[i] = st.B[i]; p.sc[i] = st.C[i]; }
    // Vector gathers need token stride 1 and every row start (batch, channel, group, state
    // offsets) on a 16-byte boundary.
    bool rows16 = aligned16(u) && aligned16(delta) && aligned16(Bs) && aligned16(Cs) &&
                  st.u[2] == 1 && st.delta[2] == 1 && st.B[3] == 1 && st.C[3] == 1;
    for (int i = 0; i < 2; ++i) rows16 = rows16 && st.u[i] % vec == 0 && st.delta[i] % vec == 0;
    for (int i = 0; i < 3; ++i) rows16 = rows16 && st.B[i] % vec == 0 && st.C[i] % vec == 0;
    p.vec_in = rows16;
    // Token rows: channel and state stride 1, and every vector (a token's VEC channels or
    // states, from a multiple of VEC on) 16-byte aligned.
    bool tok = aligned16(u) && aligned16(delta) && aligned16(Bs) && aligned16(Cs) &&
               st.u[1] == 1 && st.delta[1] == 1 && st.B[2] == 1 && st.C[2] == 1 &&
               (kc / k) % vec == 0 && n % vec == 0;
    for (int i = 0; i < 3; i += 2) tok = tok && st.u[i] % vec == 0 && st.delta[i] % vec == 0;
    for (int i = 0; i < 4; ++i) tok = tok && (i == 2 || (st.B[i] % vec == 0 && st.C[i] % vec == 0));
    p.tok_in = tok && !rows16;
    p.vec_out = (length % vec == 0) && aligned16(y);
    p.u_shared = (layout & MAMBACSR_LAYOUT_U_SHARED) ? 1 : 0;
    p.y_tokens = (layout & MAMBACSR_LAYOUT_Y_TOKENS) ? 1 : 0;
    p.y_vec = aligned16(y) && p.ch_per_group % vec == 0;
    if (order) p.order = *order;  // else zeros: the identity order without flips
    p.tables = p.order.kind != MAMBACSR_ORDER_IDENTITY;
    p.two_maps = order_maps(p.order) == 2;
    if (plan.chunks > 1) {
        const size_t nh = (size_t)(plan.chunks - 1) * (size_t)(batch * kc) * (size_t)n;
        p.ws_h = static_cast<float*>(workspace);
        p.ws_dt = p.ws_h + nh;
    }
    int* tables = nullptr;
    if (given_tables && p.tables) {  // computed once by the caller (mambacsr_scan_order_tables)
        p.ws_idx = given_tables;
        p.idx_len = plan.seq_max;
    } else if (use_tables && p.tables) {
        tables = reinterpret_cast<int*>(static_cast<char*>(workspace) + table_offset(plan));
        p.ws_idx = tables;
        p.idx_len = plan.seq_max;
    }
    const int64_t per_chunk = batch * k * p.n_cblocks;  // blocks per chunk (group of v.seg chunks)
    const int64_t groups_out = (plan.chunks + v.seg - 1) / v.seg;
    const int64_t groups_state = (plan.chunks - 1 + v.seg - 1) / v.seg;
    if (per_chunk * groups_out > INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;

    const bool strided = !same_strides(st, storage_strides(kc, k, n, length, layout));
    auto launch = [&](int mode, int64_t grid) -> cudaError_t {
        switch (dtype) {
            case MAMBACSR_FLOAT32: return launch_variant<float>(plan.variant, mode, p, strided, (int)grid, stream);
            case MAMBACSR_FLOAT16: return launch_variant<__half>(plan.variant, mode, p, strided, (int)grid, stream);
            default: return launch_variant<__nv_bfloat16>(plan.variant, mode, p, strided, (int)grid, stream);
        }
    };
    cudaError_t err = cudaSuccess;
    if (tables) err = write_order_tables(p.order, k, length, plan.seq_max, tables, stream);
    if (err == cudaSuccess && plan.chunks > 1) err = launch(MODE_STATE, per_chunk * groups_state);
    if (err == cudaSuccess) err = launch(MODE_OUT, per_chunk * groups_out);
    return err == cudaSuccess ? MAMBACSR_OK : MAMBACSR_ERR_CUDA;
}

}  // namespace

extern "C" {

int mambacsr_selective_scan_strided(const void* u, const void* delta, const float* A, const void* Bs,
                                    const void* Cs, const float* D, const float* delta_bias, void* y,
                                    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
                                    int layout, const mambacsr_scan_strides_t* strides,
                                    const mambacsr_scan_order_t* order, const int* order_tables, int dtype,
                                    int delta_softplus, int variant, void* workspace,
                                    size_t workspace_bytes, cudaStream_t stream) {
    Plan plan;
    const int status = make_plan(batch, kc, k, n, length, order, dtype, variant, &plan);
    if (status != MAMBACSR_OK) return status;
    if (batch == 0 || kc == 0 || length == 0) return MAMBACSR_OK;
    if (!u || !delta || !A || !Bs || !Cs || !y) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (layout & ~(MAMBACSR_LAYOUT_U_SHARED | MAMBACSR_LAYOUT_Y_TOKENS)) return MAMBACSR_ERR_INVALID_ARGUMENT;
    mambacsr_scan_strides_t st;
    if (strides) {
        st = *strides;
        const int64_t* all[4] = {st.u, st.delta, st.B, st.C};
        const int count[4] = {3, 3, 4, 4};
        for (int t = 0; t < 4; ++t)
            for (int i = 0; i < count[t]; ++i)
                if (all[t][i] < 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    } else {
        st = storage_strides(kc, k, n, length, layout);
    }
    const size_t have = workspace && aligned16(workspace) ? workspace_bytes : 0;
    if (plan.chunks > 1 && have < plan.ws_bytes) {
        // Too little workspace: the automatic choice falls back to the single pass; an
        // explicitly requested chunk count is an error.
        if (variant >> 8) return MAMBACSR_ERR_INVALID_ARGUMENT;
        const int status1 = make_plan(batch, kc, k, n, length, order, dtype,
                                      (variant & 0xff) | (1 << 8), &plan);
        if (status1 != MAMBACSR_OK) return status1;
    }
    const bool use_tables = plan.table_bytes && have >= full_workspace(plan);
    return run_plan(u, delta, A, Bs, Cs, D, delta_bias, y, batch, kc, k, n, length, layout, st,
                    order, dtype, delta_softplus, plan, workspace, use_tables, order_tables, stream);
}

size_t mambacsr_scan_order_tables_size(const mambacsr_scan_order_t* order, int64_t k, int64_t length) {
    if (!order || k <= 0 || length <= 0) return 0;
    return order_table_bytes(order, k, mambacsr_order_max_seq_len(order, k, length));
}

int mambacsr_scan_order_tables(const mambacsr_scan_order_t* order, int64_t k, int64_t length, int* out,
                               cudaStream_t stream) {
    const size_t bytes = mambacsr_scan_order_tables_size(order, k, length);
    if (bytes == 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (!out || k > MAMBACSR_SCAN_MAX_GROUPS) return MAMBACSR_ERR_INVALID_ARGUMENT;
    const int64_t seq_max = mambacsr_order_max_seq_len(order, k, length);
    if (seq_max >= INT32_MAX || length >= INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;
    return write_order_tables(*order, k, length, seq_max, out, stream) == cudaSuccess ? MAMBACSR_OK
                                                                                      : MAMBACSR_ERR_CUDA;
}

int mambacsr_selective_scan_ordered(const void* u, const void* delta, const float* A, const void* Bs,
                                    const void* Cs, const float* D, const float* delta_bias, void* y,
                                    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
                                    int layout, const mambacsr_scan_order_t* order, int dtype,
                                    int delta_softplus, int variant, void* workspace,
                                    size_t workspace_bytes, cudaStream_t stream) {
    return mambacsr_selective_scan_strided(u, delta, A, Bs, Cs, D, delta_bias, y, batch, kc, k, n, length,
                                           layout, nullptr, order, nullptr, dtype, delta_softplus, variant,
                                           workspace, workspace_bytes, stream);
}

size_t mambacsr_selective_scan_workspace_size_ex(int64_t batch, int64_t kc, int64_t k, int64_t n,
                                                 int64_t length, const mambacsr_scan_order_t* order,
                                                 int dtype, int variant) {
    Plan plan;
    if (make_plan(batch, kc, k, n, length, order, dtype, variant, &plan) != MAMBACSR_OK) return 0;
    return full_workspace(plan);
}

size_t mambacsr_selective_scan_workspace_size(int64_t batch, int64_t kc, int64_t k, int64_t n,
                                              int64_t length, const mambacsr_scan_order_t* order,
                                              int dtype) {
    return mambacsr_selective_scan_workspace_size_ex(batch, kc, k, n, length, order, dtype, 0);
}

int mambacsr_selective_scan_ex(const void* u, const void* delta, const float* A, const void* Bs,
                               const void* Cs, const float* D, const float* delta_bias, void* y,
                               int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
                               int dtype, int delta_softplus, int variant, cudaStream_t stream) {
    return mambacsr_selective_scan_ordered(u, delta, A, Bs, Cs, D, delta_bias, y, batch, kc, k, n,
                                           length, 0, NULL, dtype, delta_softplus, variant, NULL, 0,
                                           stream);
}

int mambacsr_selective_scan(const void* u, const void* delta, const float* A, const void* Bs,
                            const void* Cs, const float* D, const float* delta_bias, void* y,
                            int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
                            int dtype, int delta_softplus, cudaStream_t stream) {
    return mambacsr_selective_scan_ex(u, delta, A, Bs, Cs, D, delta_bias, y, batch, kc, k, n,
                                      length, dtype, delta_softplus, 0, stream);
}

int mambacsr_scan_variant_count(void) { return kNumVariants; }

const char* mambacsr_scan_variant_name(int variant) {
    if (variant < 0 || variant > kNumVariants) return "";
    return kVariants[variant].name;
}

const char* mambacsr_scan_status_string(int status) {
    switch (status) {
        case MAMBACSR_OK: return "ok";
        case MAMBACSR_ERR_INVALID_ARGUMENT: return "invalid argument";
        case MAMBACSR_ERR_UNSUPPORTED: return "unsupported shape or dtype";
        case MAMBACSR_ERR_CUDA: return "CUDA launch failed";
        default: return "unknown status";
    }
}

int mambacsr_scan_abi_version(void) { return MAMBACSR_SCAN_ABI_VERSION; }

int mambacsr_scan_max_states(void) { return MAMBACSR_SCAN_MAX_STATES; }

}  // extern "C"
