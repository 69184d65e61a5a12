// selective_scan_bwd.cu - backward of the SelectiveScan contract (mambacsr_scan_bwd.h), for training.
//
// One thread per (batch, channel, state n); the NS lanes of a channel are adjacent in a warp
// (NS = N rounded up to 8, 16 or 32), a block holds 128 / NS channels of one group. Three
// sequential passes over the group's sequence, in the scan order of mambacsr_scan_order.h:
//
//   1. forward from h = 0, storing h at the start of every SEG-token segment (workspace);
//   2. per segment, last to first: recompute h_t and a_t = exp(dt_t * A) inside the segment
//      from its checkpoint into shared memory;
//   3. walk the segment backwards with g_t = dL/dh_t = C_t * dy_t + a_{t+1} * g_{t+1}:
//        ddt_t = sum_n g_t (h_{t-1} a_t A_n + B_t u_t)     du_t = sum_n g_t dt_t B_t + D dy_t
//        dA_n += g_t h_{t-1} a_t dt_t                      dB_t = sum_c g_t dt_t u_t
//        dC_t = sum_c dy_t h_t                             ddelta_t = ddt_t * softplus'(x_t)
//      Sums over n: warp shuffles inside the channel's lanes. Sums over channels (dB, dC):
//      shuffles across the warp's channels, then shared-memory atomics across the block's
//      warps, then one global atomic per (n, token) and block.
//
// Virtual tokens (source -1: window padding) read u = delta = B = C = 0 but still decay the
// state with dt = softplus(delta_bias), so they add to dA and ddelta_bias and nothing else.

#include "mambacsr_scan_bwd.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <string.h>

namespace {

constexpr int kThreads = 128;
constexpr int kSeg = MAMBACSR_SCAN_BWD_SEGMENT;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + __expf(-x)); }

struct Problem {
    int64_t kc, k, c, n, length, u_channels;
    int u_shared, delta_softplus;
};

template <typename T, int NS>
__global__ void __launch_bounds__(kThreads)
scan_backward_kernel(const T* __restrict__ u, const T* __restrict__ delta, const float* __restrict__ A,
                     const T* __restrict__ Bs, const T* __restrict__ Cs, const float* __restrict__ D,
                     const float* __restrict__ delta_bias, const T* __restrict__ dy,
                     float* __restrict__ du, float* __restrict__ ddelta, float* __restrict__ dA,
                     float* __restrict__ dBs, float* __restrict__ dCs, float* __restrict__ dD,
                     float* __restrict__ ddelta_bias, float* __restrict__ ckpt, int64_t n_seg_max,
                     const mambacsr_scan_order_t order, const Problem p) {
    constexpr int kChannels = kThreads / NS;
    // A segment's inputs, staged by the whole block with independent loads (one memory latency
    // per segment, not per token), then read by the sequential loops from shared memory.
    __shared__ float h_s[kSeg][kThreads];   // h_t after token t of the segment
    __shared__ float u_s[kSeg][kChannels];
    __shared__ float x_s[kSeg][kChannels];  // delta + bias (before softplus)
    __shared__ float dt_s[kSeg][kChannels];
    __shared__ float dy_s[kSeg][kChannels];
    __shared__ float B_s[kSeg][NS];
    __shared__ float C_s[kSeg][NS];
    __shared__ float dB_s[kSeg][NS];
    __shared__ float dC_s[kSeg][NS];
    __shared__ int64_t src_s[kSeg];
    __shared__ int64_t tgt_s[kSeg];

    const int tid = threadIdx.x;
    const int lane_n = tid % NS;
    const int my_ch = tid / NS;                                     // channel slot in the block
    const int g = blockIdx.y;
    const int64_t b = blockIdx.z;
    const int64_t ch0 = (int64_t)blockIdx.x * kChannels;            // first channel (in the group)
    const int64_t cl = ch0 + my_ch;
    const bool ch_ok = cl < p.c;
    const bool n_ok = ch_ok && lane_n < p.n;
    const int64_t ch = g * p.c + (ch_ok ? cl : 0);                  // channel of KC
    const int64_t L = p.length;
    const int64_t seq = mambacsr_order_seq_len(&order, g, L);
    const int64_t n_seg = (seq + kSeg - 1) / kSeg;

    const float A_n = n_ok ? A[ch * p.n + lane_n] : 0.f;
    const float D_c = (D != nullptr && ch_ok) ? D[ch] : 0.f;
    const int64_t u_ch = p.u_shared ? (ch_ok ? cl : 0) : ch;
    float* ck = ckpt + ((b * p.kc + ch) * NS + lane_n) * n_seg_max;

    // Token positions of segment `seg`, then its inputs (virtual tokens and idle slots read 0).
    auto stage = [&](int64_t seg, bool backward) {
        __syncthreads();  // the previous segment is done with the staging buffers
        if (tid < kSeg) {
            const int64_t t = seg * kSeg + tid;
            src_s[tid] = t < seq ? mambacsr_order_source(&order, g, t, L) : -1;
            tgt_s[tid] = t < seq ? mambacsr_order_target(&order, g, t, L) : -1;
        }
        __syncthreads();
        for (int i = tid; i < kSeg * kChannels; i += kThreads) {
            const int ti = i % kSeg, cj = i / kSeg;
            const int64_t c_in = ch0 + cj;
            const int64_t s = src_s[ti];
            float uu = 0.f, dd = 0.f, dyv = 0.f, bias = 0.f;
            if (c_in < p.c) {
                const int64_t kc_ch = g * p.c + c_in;
                bias = delta_bias != nullptr ? delta_bias[kc_ch] : 0.f;
                if (s >= 0) {
                    dd = to_f(delta[(b * p.kc + kc_ch) * L + s]);
                    uu = to_f(u[(b * p.u_channels + (p.u_shared ? c_in : kc_ch)) * L + s]);
                }
                const int64_t o = tgt_s[ti];
                if (backward && o >= 0) dyv = to_f(dy[(b * p.kc + kc_ch) * L + o]);
            }
            const float x = dd + bias;
            u_s[ti][cj] = uu;
            x_s[ti][cj] = x;
            dt_s[ti][cj] = p.delta_softplus ? softplus_f(x) : x;
            dy_s[ti][cj] = dyv;
        }
        for (int i = tid; i < kSeg * NS; i += kThreads) {
            const int ti = i % kSeg, nn = i / kSeg;
            const int64_t s = src_s[ti];
            const int64_t off = ((b * p.k + g) * p.n + nn) * L + s;
            const bool ok = s >= 0 && nn < p.n;
            B_s[ti][nn] = ok ? to_f(Bs[off]) : 0.f;
            C_s[ti][nn] = ok && backward ? to_f(Cs[off]) : 0.f;
            dB_s[ti][nn] = 0.f;
            dC_s[ti][nn] = 0.f;
        }
        __syncthreads();
    };

    // Pass 1: checkpoints.
    float h = 0.f;
    for (int64_t seg = 0; seg < n_seg; ++seg) {
        stage(seg, false);
        if (ch_ok) ck[seg] = h;  // idle slots alias channel 0's checkpoints: they must not write
        const int steps = (int)(seq - seg * kSeg < kSeg ? seq - seg * kSeg : kSeg);
        for (int i = 0; i < steps; ++i) {
            const float dt = dt_s[i][my_ch];
            h = __expf(dt * A_n) * h + dt * B_s[i][lane_n] * u_s[i][my_ch];
        }
    }

    // Passes 2 and 3, segment by segment from the end.
    float dh = 0.f, dA_acc = 0.f, dD_acc = 0.f, dbias_acc = 0.f;
    for (int64_t seg = n_seg - 1; seg >= 0; --seg) {
        stage(seg, true);
        const int steps = (int)(seq - seg * kSeg < kSeg ? seq - seg * kSeg : kSeg);
        const float h0 = ck[seg];
        h = h0;
        for (int i = 0; i < steps; ++i) {
            const float dt = dt_s[i][my_ch];
            h = __expf(dt * A_n) * h + dt * B_s[i][lane_n] * u_s[i][my_ch];
            h_s[i][tid] = h;
        }
        for (int i = steps - 1; i >= 0; --i) {
            const float dt = dt_s[i][my_ch], uu = u_s[i][my_ch], dyv = dy_s[i][my_ch];
            const float bb = B_s[i][lane_n];
            const float a = __expf(dt * A_n);
            const float h_t = h_s[i][tid];
            const float h_prev = i > 0 ? h_s[i - 1][tid] : h0;
            const float gr = dh + C_s[i][lane_n] * dyv;
            dh = gr * a;
            dA_acc += gr * h_prev * a * dt;
            float ddt = gr * (h_prev * a * A_n + bb * uu);
            float dun = gr * dt * bb;
            float dBv = gr * dt * uu;
            float dCv = dyv * h_t;
#pragma unroll
            for (int off = 1; off < NS; off <<= 1) {  // over the channel's states
                ddt += __shfl_xor_sync(0xffffffffu, ddt, off);
                dun += __shfl_xor_sync(0xffffffffu, dun, off);
            }
#pragma unroll
            for (int off = NS; off < 32; off <<= 1) {  // over the warp's channels, per state
                dBv += __shfl_xor_sync(0xffffffffu, dBv, off);
                dCv += __shfl_xor_sync(0xffffffffu, dCv, off);
            }
            if ((tid & 31) < NS) {
                atomicAdd(&dB_s[i][lane_n], dBv);
                atomicAdd(&dC_s[i][lane_n], dCv);
            }
            if (lane_n == 0 && ch_ok) {
                const float dx = p.delta_softplus ? ddt * sigmoid_f(x_s[i][my_ch]) : ddt;
                dbias_acc += dx;
                dD_acc += dyv * uu;
                const int64_t s = src_s[i];
                if (s >= 0) {
                    ddelta[(b * p.kc + ch) * L + s] = dx;
                    const float du_v = dun + D_c * dyv;
                    float* du_p = du + (b * p.u_channels + u_ch) * L + s;
                    if (p.u_shared) atomicAdd(du_p, du_v);
                    else *du_p = du_v;
                }
            }
        }
        __syncthreads();  // dB_s / dC_s complete
        for (int i = tid; i < kSeg * NS; i += kThreads) {
            const int ti = i % kSeg, nn = i / kSeg;
            const int64_t s = src_s[ti];
            if (ti < steps && s >= 0 && nn < p.n) {
                const int64_t off = ((b * p.k + g) * p.n + nn) * L + s;
                atomicAdd(dBs + off, dB_s[ti][nn]);
                atomicAdd(dCs + off, dC_s[ti][nn]);
            }
        }
    }
    if (n_ok) atomicAdd(dA + ch * p.n + lane_n, dA_acc);
    if (lane_n == 0 && ch_ok) {
        if (dD != nullptr) atomicAdd(dD + ch, dD_acc);
        if (ddelta_bias != nullptr) atomicAdd(ddelta_bias + ch, dbias_acc);
    }
}

int states_lanes(int64_t n) { return n <= 8 ? 8 : n <= 16 ? 16 : 32; }

template <typename T, int NS>
int launch(const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
           const float* D, const float* delta_bias, const void* dy, float* du, float* ddelta,
           float* dA, float* dBs, float* dCs, float* dD, float* ddelta_bias, float* ckpt,
           int64_t n_seg_max, int64_t batch, const mambacsr_scan_order_t& o, const Problem& p,
           cudaStream_t stream) {
    constexpr int kChannels = kThreads / NS;
    const dim3 grid((unsigned)((p.c + kChannels - 1) / kChannels), (unsigned)p.k, (unsigned)batch);
    scan_backward_kernel<T, NS><<<grid, kThreads, 0, stream>>>(
        (const T*)u, (const T*)delta, A, (const T*)Bs, (const T*)Cs, D, delta_bias, (const T*)dy,
        du, ddelta, dA, dBs, dCs, dD, ddelta_bias, ckpt, n_seg_max, o, p);
    return cudaGetLastError() == cudaSuccess ? MAMBACSR_OK : MAMBACSR_ERR_CUDA;
}

template <typename T>
int dispatch_states(int ns, const void* u, const void* delta, const float* A, const void* Bs,
                    const void* Cs, const float* D, const float* delta_bias, const void* dy, float* du,
                    float* ddelta, float* dA, float* dBs, float* dCs, float* dD, float* ddelta_bias,
                    float* ckpt, int64_t n_seg_max, int64_t batch, const mambacsr_scan_order_t& o,
                    const Problem& p, cudaStream_t stream) {
#define MAMBACSR_BWD_LAUNCH(NS_)                                                                  \
    return launch<T, NS_>(u, delta, A, Bs, Cs, D, delta_bias, dy, du, ddelta, dA, dBs, dCs, dD,   \
                          ddelta_bias, ckpt, n_seg_max, batch, o, p, stream)
    if (ns == 8) MAMBACSR_BWD_LAUNCH(8);
    if (ns == 16) MAMBACSR_BWD_LAUNCH(16);
    MAMBACSR_BWD_LAUNCH(32);
#undef MAMBACSR_BWD_LAUNCH
}

mambacsr_scan_order_t identity_order() {
    mambacsr_scan_order_t o;
    memset(&o, 0, sizeof(o));
    o.kind = MAMBACSR_ORDER_IDENTITY;
    return o;
}

}  // namespace

extern "C" {

size_t mambacsr_selective_scan_backward_workspace_size(int64_t batch, int64_t kc, int64_t k, int64_t n,
                                                       int64_t length, const mambacsr_scan_order_t* order) {
    if (batch <= 0 || kc <= 0 || k <= 0 || n <= 0 || length <= 0 || n > MAMBACSR_SCAN_BWD_MAX_STATES)
        return 0;
    const mambacsr_scan_order_t o = order ? *order : identity_order();
    const int64_t n_seg = (mambacsr_order_max_seq_len(&o, k, length) + kSeg - 1) / kSeg;
    return (size_t)(batch * kc * states_lanes(n) * n_seg) * sizeof(float);
}

int mambacsr_selective_scan_backward(const void* u, const void* delta, const float* A, const void* Bs,
                                     const void* Cs, const float* D, const float* delta_bias, const void* dy,
                                     float* du, float* ddelta, float* dA, float* dBs, float* dCs, float* dD,
                                     float* ddelta_bias, int64_t batch, int64_t kc, int64_t k, int64_t n,
                                     int64_t length, int u_shared, const mambacsr_scan_order_t* order,
                                     int dtype, int delta_softplus, void* workspace, size_t workspace_bytes,
                                     cudaStream_t stream) {
    if (batch < 0 || kc < 0 || k <= 0 || n <= 0 || length < 0 || (kc % k) != 0)
        return MAMBACSR_ERR_INVALID_ARGUMENT;
    if (n > MAMBACSR_SCAN_BWD_MAX_STATES) return MAMBACSR_ERR_UNSUPPORTED;
    if (k > MAMBACSR_SCAN_MAX_GROUPS || batch > 65535 || k > 65535) return MAMBACSR_ERR_UNSUPPORTED;
    if (batch == 0 || kc == 0 || length == 0) return MAMBACSR_OK;
    if (!u || !delta || !A || !Bs || !Cs || !dy || !du || !ddelta || !dA || !dBs || !dCs)
        return MAMBACSR_ERR_INVALID_ARGUMENT;
    const mambacsr_scan_order_t o = order ? *order : identity_order();
    if (mambacsr_order_check(&o, k, length) != 0) return MAMBACSR_ERR_INVALID_ARGUMENT;
    const size_t need = mambacsr_selective_scan_backward_workspace_size(batch, kc, k, n, length, &o);
    if (workspace == nullptr || workspace_bytes < need) return MAMBACSR_ERR_INVALID_ARGUMENT;
    const int64_t n_seg_max = (mambacsr_order_max_seq_len(&o, k, length) + kSeg - 1) / kSeg;
    Problem p;
    p.kc = kc;
    p.k = k;
    p.c = kc / k;
    p.n = n;
    p.length = length;
    p.u_shared = u_shared != 0;
    p.u_channels = u_shared ? kc / k : kc;
    p.delta_softplus = delta_softplus != 0;
    const int ns = states_lanes(n);
    float* ckpt = (float*)workspace;
    switch (dtype) {
        case MAMBACSR_FLOAT32:
            return dispatch_states<float>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, du, ddelta, dA, dBs, dCs,
                                          dD, ddelta_bias, ckpt, n_seg_max, batch, o, p, stream);
        case MAMBACSR_FLOAT16:
            return dispatch_states<__half>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, du, ddelta, dA, dBs, dCs,
                                           dD, ddelta_bias, ckpt, n_seg_max, batch, o, p, stream);
        case MAMBACSR_BFLOAT16:
            return dispatch_states<__nv_bfloat16>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, du, ddelta, dA,
                                                  dBs, dCs, dD, ddelta_bias, ckpt, n_seg_max, batch, o, p,
                                                  stream);
        default:
            return MAMBACSR_ERR_UNSUPPORTED;
    }
}

}  // extern "C"
