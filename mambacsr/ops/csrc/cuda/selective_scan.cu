// selective_scan.cu - the MambaCSR SelectiveScan CUDA kernel (contract: mambacsr_scan.h).
//
// Design (counts for MambaCSR's shape, K*C = 720, N = 16, K = 2; see plugins/NOTES.md):
//  * The work is one exp per (batch, channel, state, token): the special-function unit is the
//    floor, not memory. So every exp is computed exactly once, on the recurrence's own thread,
//    and the state stays in registers for the whole sequence (no chunk carry pass, which would
//    need a second exp per element).
//  * A block owns CB channels of one (batch, group) and walks L in tiles of NT tokens. W threads
//    share a channel, each holding S of its N states (state n = s * W + lane), so a warp holds
//    32 / W channels and there are batch * KC * W / 32 independent warps.
//  * Per tile: u, delta, Bs, Cs are read once with 16-byte loads, prefetched into registers one
//    tile ahead; softplus(delta + bias), dt * u and D * u are computed once per (channel, token)
//    into shared memory; Bs/Cs of the group are staged once in shared memory and shared by the
//    block's CB channels. The W partial sums of a token are combined by a transpose-reduce over
//    W lanes and W tokens (W - 1 shuffles for W tokens), written once, and the tile is stored
//    with 16-byte stores.
#include "mambacsr_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// ---- element types ---------------------------------------------------------------------------
template <typename T> struct Elem;
template <> struct Elem<float> {
    __device__ static float load(const float* p) { return __ldg(p); }
    __device__ static void store(float* p, float v) { *p = v; }
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
    __device__ static float load(const __half* p) { return __half2float(__ldg(p)); }
    __device__ static void store(__half* p, float v) { *p = __float2half_rn(v); }
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
    __device__ static float load(const __nv_bfloat16* p) { return __bfloat162float(__ldg(p)); }
    __device__ static void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
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

__device__ __forceinline__ float log2_approx(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// softplus as mamba-ssm (x > 20 -> x, else log1p(exp(x))), written as
// max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1]: log1p by its series (7 terms, < 1e-8 relative)
// where e < 1/16, else by lg2(1 + e) (1 + e is exact to 2^-24 / e <= 1e-6 relative there).
// Two special-function ops and ~14 others, against ~40 for log1pf(expf(x)).
__device__ __forceinline__ float softplus(float x) {
    const float e = exp2_approx(-fabsf(x) * kLog2e);
    const float series =
        e * fmaf(e, fmaf(e, fmaf(e, fmaf(e, fmaf(e, fmaf(e, 1.f / 7.f, -1.f / 6.f), 0.2f), -0.25f),
                                 1.f / 3.f), -0.5f), 1.f);
    const float lg = log2_approx(1.f + e) * 0.6931471805599453f;
    return fmaxf(x, 0.f) + (e < 0.0625f ? series : lg);
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
    int64_t L;
    int kc;
    int k;
    int n;
    int ch_per_group;
    int n_cblocks;
    int softplus;
    int vec_ok;
};

template <typename T, int R, int S, int W, int CB, int NT>
__global__ void __launch_bounds__(W * CB / R)
scan_kernel(const Params p) {
    constexpr int THREADS = W * CB / R;
    constexpr int NMAX = S * W;
    constexpr int VEC = 16 / int(sizeof(T));
    constexpr int PA = NT + 8;  // pitch of the per-channel arrays (bank spread for the y writes)
    constexpr int PB = NT + 4;  // pitch of the B/C arrays (16-byte rows, conflict-free float4 reads)
    constexpr int VPR = NT / VEC;
    constexpr int NV_U = CB * VPR;
    constexpr int IT_U = (NV_U + THREADS - 1) / THREADS;
    constexpr int IT_B = (NMAX * VPR + THREADS - 1) / THREADS;
    static_assert(W == 4 || W == 8 || W == 16, "W must be 4, 8 or 16");
    static_assert(NT % W == 0 && NT % VEC == 0, "tile size");
    static_assert(THREADS % 32 == 0 && CB % R == 0, "whole warps, whole channel groups");
    using E = Elem<T>;

    __shared__ __align__(16) float sDt[CB * PA];
    __shared__ __align__(16) float sDtu[CB * PA];
    __shared__ __align__(16) float sY[CB * PA];
    __shared__ __align__(16) float sB[NMAX * PB];
    __shared__ __align__(16) float sC[NMAX * PB];

    const int tid = threadIdx.x;
    int blk = blockIdx.x;
    const int cb = blk % p.n_cblocks;
    blk /= p.n_cblocks;
    const int g = blk % p.k;
    const int b = blk / p.k;
    const int c_first = g * p.ch_per_group + cb * CB;
    const int nch = min(CB, p.ch_per_group - cb * CB);
    const int N = p.n;
    const int64_t L = p.L;
    const int64_t row0 = ((int64_t)b * p.kc + c_first) * L;
    const T* __restrict__ u = static_cast<const T*>(p.u) + row0;
    const T* __restrict__ dl = static_cast<const T*>(p.delta) + row0;
    T* __restrict__ y = static_cast<T*>(p.y) + row0;
    const int64_t brow0 = ((int64_t)b * p.k + g) * N * L;
    const T* __restrict__ Bp = static_cast<const T*>(p.B) + brow0;
    const T* __restrict__ Cp = static_cast<const T*>(p.C) + brow0;

    // Scan role: channels cg * R .. cg * R + R - 1 of the block, lane w of their W lanes,
    // states s * W + w.
    const int cg = tid / W;
    const int w = tid % W;
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
    // Padding states (n >= N) read B = C = 0 forever.
    for (int i = tid; i < (NMAX - N) * PB; i += THREADS) {
        sB[N * PB + i] = 0.f;
        sC[N * PB + i] = 0.f;
    }

    const int64_t ntiles = (L + NT - 1) / NT;
    auto tile_full = [&](int64_t tile) { return p.vec_ok && (tile + 1) * NT <= L; };

    uint4 ru[IT_U], rd[IT_U], rb[IT_B], rc[IT_B];
    auto load_regs = [&](int64_t tile) {
        const int64_t t0 = tile * NT;
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR, col = (vi % VPR) * VEC;
            if (vi < NV_U && row < nch) {
                ru[i] = ld_stream(u + row * L + t0 + col);
                rd[i] = ld_stream(dl + row * L + t0 + col);
            }
        }
#pragma unroll
        for (int i = 0; i < IT_B; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR, col = (vi % VPR) * VEC;
            if (vi < N * VPR) {
                rb[i] = ld_shared_input(Bp + row * L + t0 + col);
                rc[i] = ld_shared_input(Cp + row * L + t0 + col);
            }
        }
    };
    auto prep_values = [&](int row, float uf, float df, float bias, float dskip, float& dt,
                           float& dtu, float& du) {
        (void)row;
        float x = df + bias;
        dt = p.softplus ? softplus(x) : x;
        dtu = dt * uf;
        du = dskip * uf;
    };
    auto prep_regs = [&]() {
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR, col = (vi % VPR) * VEC;
            if (vi < NV_U) {
                float dt[VEC], dtu[VEC], du[VEC];
                if (row < nch) {
                    float uf[VEC], df[VEC];
                    E::unpack(ru[i], uf);
                    E::unpack(rd[i], df);
                    const float bias = p.bias ? __ldg(p.bias + c_first + row) : 0.f;
                    const float dskip = p.D ? __ldg(p.D + c_first + row) : 0.f;
#pragma unroll
                    for (int e = 0; e < VEC; ++e)
                        prep_values(row, uf[e], df[e], bias, dskip, dt[e], dtu[e], du[e]);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) dt[e] = dtu[e] = du[e] = 0.f;
                }
#pragma unroll
                for (int e = 0; e < VEC; e += 4) {
                    const int o = row * PA + col + e;
                    *reinterpret_cast<float4*>(sDt + o) = make_float4(dt[e], dt[e + 1], dt[e + 2], dt[e + 3]);
                    *reinterpret_cast<float4*>(sDtu + o) = make_float4(dtu[e], dtu[e + 1], dtu[e + 2], dtu[e + 3]);
                    *reinterpret_cast<float4*>(sY + o) = make_float4(du[e], du[e + 1], du[e + 2], du[e + 3]);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < IT_B; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR, col = (vi % VPR) * VEC;
            if (vi < N * VPR) {
                float bf[VEC], cf[VEC];
                E::unpack(rb[i], bf);
                E::unpack(rc[i], cf);
#pragma unroll
                for (int e = 0; e < VEC; e += 4) {
                    const int o = row * PB + col + e;
                    *reinterpret_cast<float4*>(sB + o) = make_float4(bf[e], bf[e + 1], bf[e + 2], bf[e + 3]);
                    *reinterpret_cast<float4*>(sC + o) = make_float4(cf[e], cf[e + 1], cf[e + 2], cf[e + 3]);
                }
            }
        }
    };
    auto prep_scalar = [&](int64_t tile) {
        const int64_t t0 = tile * NT;
        for (int idx = tid; idx < CB * NT; idx += THREADS) {
            const int row = idx / NT, col = idx % NT;
            float dt = 0.f, dtu = 0.f, du = 0.f;
            if (row < nch && t0 + col < L) {
                const float uf = E::load(u + row * L + t0 + col);
                const float df = E::load(dl + row * L + t0 + col);
                const float bias = p.bias ? __ldg(p.bias + c_first + row) : 0.f;
                const float dskip = p.D ? __ldg(p.D + c_first + row) : 0.f;
                prep_values(row, uf, df, bias, dskip, dt, dtu, du);
            }
            sDt[row * PA + col] = dt;
            sDtu[row * PA + col] = dtu;
            sY[row * PA + col] = du;
        }
        for (int idx = tid; idx < N * NT; idx += THREADS) {
            const int row = idx / NT, col = idx % NT;
            const bool ok = t0 + col < L;
            sB[row * PB + col] = ok ? E::load(Bp + row * L + t0 + col) : 0.f;
            sC[row * PB + col] = ok ? E::load(Cp + row * L + t0 + col) : 0.f;
        }
    };
    auto output_vec = [&](int64_t tile) {
        const int64_t t0 = tile * NT;
#pragma unroll
        for (int i = 0; i < IT_U; ++i) {
            const int vi = tid + i * THREADS;
            const int row = vi / VPR, col = (vi % VPR) * VEC;
            if (vi < NV_U && row < nch) {
                float v[VEC];
#pragma unroll
                for (int e = 0; e < VEC; e += 4) {
                    const float4 f = *reinterpret_cast<const float4*>(sY + row * PA + col + e);
                    v[e] = f.x; v[e + 1] = f.y; v[e + 2] = f.z; v[e + 3] = f.w;
                }
                st_stream(y + row * L + t0 + col, E::pack(v));
            }
        }
    };
    auto output_scalar = [&](int64_t tile) {
        const int64_t t0 = tile * NT;
        for (int idx = tid; idx < CB * NT; idx += THREADS) {
            const int row = idx / NT, col = idx % NT;
            if (row < nch && t0 + col < L) E::store(y + row * L + t0 + col, sY[row * PA + col]);
        }
    };
    auto scan_tile = [&]() {
#pragma unroll 2
        for (int j0 = 0; j0 < NT; j0 += W) {
            float dt[R][W], dtu[R][W], part[R][W];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float* dtRow = sDt + (cg * R + r) * PA + j0;
                const float* dtuRow = sDtu + (cg * R + r) * PA + j0;
#pragma unroll
                for (int q = 0; q < W; q += 4) {
                    const float4 a = *reinterpret_cast<const float4*>(dtRow + q);
                    const float4 c = *reinterpret_cast<const float4*>(dtuRow + q);
                    dt[r][q] = a.x; dt[r][q + 1] = a.y; dt[r][q + 2] = a.z; dt[r][q + 3] = a.w;
                    dtu[r][q] = c.x; dtu[r][q + 1] = c.y; dtu[r][q + 2] = c.z; dtu[r][q + 3] = c.w;
                }
#pragma unroll
                for (int j = 0; j < W; ++j) part[r][j] = 0.f;
            }
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const float* bRow = sB + (s * W + w) * PB + j0;
                const float* cRow = sC + (s * W + w) * PB + j0;
                float bb[W], cc[W];
#pragma unroll
                for (int q = 0; q < W; q += 4) {
                    const float4 x = *reinterpret_cast<const float4*>(bRow + q);
                    const float4 z = *reinterpret_cast<const float4*>(cRow + q);
                    bb[q] = x.x; bb[q + 1] = x.y; bb[q + 2] = x.z; bb[q + 3] = x.w;
                    cc[q] = z.x; cc[q + 1] = z.y; cc[q + 2] = z.z; cc[q + 3] = z.w;
                }
#pragma unroll
                for (int j = 0; j < W; ++j) {
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        const float a = exp2_approx(dt[r][j] * A2[r][s]);
                        h[r][s] = fmaf(a, h[r][s], dtu[r][j] * bb[j]);
                        part[r][j] = fmaf(cc[j], h[r][s], part[r][j]);
                    }
                }
            }
            // Transpose-reduce over the W lanes of the channel group: afterwards lane w holds
            // the sum over all N states for token j0 + w of each of its R channels.
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
            for (int r = 0; r < R; ++r) sY[(cg * R + r) * PA + j0 + w] += part[r][0];
        }
    };

    if (ntiles == 0) return;
    if (tile_full(0)) {
        load_regs(0);
        prep_regs();
    } else {
        prep_scalar(0);
    }
    if (ntiles > 1 && tile_full(1)) load_regs(1);
    for (int64_t tile = 0; tile < ntiles; ++tile) {
        __syncthreads();  // tile's inputs are in shared memory
        scan_tile();
        __syncthreads();  // tile's outputs are complete
        const bool full = tile_full(tile);
        const bool has_next = tile + 1 < ntiles;
        const bool next_full = has_next && tile_full(tile + 1);
        if (full) output_vec(tile); else output_scalar(tile);
        if (has_next) {
            // With the same (thread -> element) mapping on both sides, each thread only
            // overwrites the y elements it has just stored: no barrier needed.
            if (!(full && next_full)) __syncthreads();
            if (next_full) prep_regs(); else prep_scalar(tile + 1);
            if (tile + 2 < ntiles && tile_full(tile + 2)) load_regs(tile + 2);
        }
    }
}

// ---- variants -------------------------------------------------------------------------------
// R channels x S states per thread, W threads per channel group (N <= S * W), CB channels per
// block, NT tokens per tile. Per (thread, token): 2R + 2S shared-memory reads for R * S exps.
struct Variant {
    const char* name;
    int r, s, w, cb, nt;
};

#define MAMBACSR_VARIANTS(X)      \
    X(1, 1, 2, 8, 16, 64)         \
    X(2, 2, 2, 8, 16, 32)         \
    X(3, 2, 4, 4, 32, 32)         \
    X(4, 4, 4, 4, 32, 32)         \
    X(5, 1, 4, 4, 32, 64)         \
    X(6, 1, 4, 8, 16, 64)         \
    X(7, 1, 8, 8, 16, 32)         \
    X(8, 2, 8, 8, 32, 32)

constexpr int kNumVariants = 8;
const Variant kVariants[kNumVariants + 1] = {
    {"auto", 0, 0, 0, 0, 0},
#define X(id, R, S, W, CB, NT) {"R" #R "_S" #S "_W" #W "_CB" #CB "_NT" #NT, R, S, W, CB, NT},
    MAMBACSR_VARIANTS(X)
#undef X
};

template <typename T>
cudaError_t launch_variant(int variant, const Params& p, int grid, cudaStream_t stream) {
    switch (variant) {
#define X(id, R, S, W, CB, NT) \
    case id: scan_kernel<T, R, S, W, CB, NT><<<grid, W * CB / R, 0, stream>>>(p); break;
        MAMBACSR_VARIANTS(X)
#undef X
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

int sm_count() {
    static int cached[64] = {0};
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 132;
    if (dev >= 0 && dev < 64 && cached[dev]) return cached[dev];
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    if (dev >= 0 && dev < 64) cached[dev] = n;
    return n;
}

int choose_variant(int64_t batch, int64_t k, int64_t ch_per_group, int64_t n) {
    const int64_t sms = sm_count();
    auto warps = [&](int id) {
        const Variant& v = kVariants[id];
        return batch * k * ((ch_per_group + v.cb - 1) / v.cb) * (v.w * v.cb / v.r) / 32;
    };
    // Measured on H100 (plugins/NOTES.md): one channel, 2 states per thread (most warps) wins
    // until there are ~2 warps of the 2-channel x 4-state variant per SM sub-partition.
    if (n <= 16) return warps(3) >= 8 * sms ? 3 : 1;
    if (n <= 32) return 6;
    return warps(8) >= 8 * sms ? 8 : 7;
}

bool aligned16(const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; }

}  // namespace

extern "C" {

int mambacsr_selective_scan_ex(const void* u, const void* delta, const float* A, const void* Bs,
                               const void* Cs, const float* D, const float* delta_bias, void* y,
                               int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
                               int dtype, int delta_softplus, int variant, cudaStream_t stream) {
    if (batch < 0 || kc < 0 || k <= 0 || n <= 0 || length < 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (kc % k != 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (n > MAMBACSR_SCAN_MAX_STATES) return MAMBACSR_ERR_UNSUPPORTED;
    if (dtype != MAMBACSR_FLOAT32 && dtype != MAMBACSR_FLOAT16 && dtype != MAMBACSR_BFLOAT16)
        return MAMBACSR_ERR_UNSUPPORTED;
    if (variant < 0 || variant > kNumVariants) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (batch == 0 || kc == 0 || length == 0) return MAMBACSR_OK;
    if (!u || !delta || !A || !Bs || !Cs || !y) return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (kc > INT32_MAX / 2 || batch * k > INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;

    const int64_t ch_per_group = kc / k;
    if (variant == 0) variant = choose_variant(batch, k, ch_per_group, n);
    const Variant& v = kVariants[variant];
    if (n > v.s * v.w) return MAMBACSR_ERR_UNSUPPORTED;

    const int vec = dtype == MAMBACSR_FLOAT32 ? 4 : 8;
    Params p;
    p.u = u; p.delta = delta; p.A = A; p.B = Bs; p.C = Cs; p.D = D; p.bias = delta_bias; p.y = y;
    p.L = length;
    p.kc = (int)kc;
    p.k = (int)k;
    p.n = (int)n;
    p.ch_per_group = (int)ch_per_group;
    p.n_cblocks = (int)((ch_per_group + v.cb - 1) / v.cb);
    p.softplus = delta_softplus ? 1 : 0;
    p.vec_ok = (length % vec == 0) && aligned16(u) && aligned16(delta) && aligned16(Bs) &&
               aligned16(Cs) && aligned16(y);
    const int64_t grid = batch * k * p.n_cblocks;
    if (grid > INT32_MAX) return MAMBACSR_ERR_UNSUPPORTED;

    cudaError_t err;
    switch (dtype) {
        case MAMBACSR_FLOAT32: err = launch_variant<float>(variant, p, (int)grid, stream); break;
        case MAMBACSR_FLOAT16: err = launch_variant<__half>(variant, p, (int)grid, stream); break;
        default: err = launch_variant<__nv_bfloat16>(variant, p, (int)grid, stream); break;
    }
    return err == cudaSuccess ? MAMBACSR_OK : MAMBACSR_ERR_CUDA;
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

}  // extern "C"
