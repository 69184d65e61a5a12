// selective_scan_bwd.cu - backward of the SelectiveScan contract (mambacsr_scan_bwd.h), for training.
//
// One thread per (batch, channel, state n); the NS lanes of a channel are adjacent in a warp
// (NS = N rounded up to 8, 16 or 32), a block holds 128 / NS channels of one group. A group's
// sequence (in the scan order of mambacsr_scan_order.h) is cut into P chunks of whole SEG-token
// segments, one block per chunk, so that a small batch still fills the GPU (P from the occupancy
// and the wave count: pick_chunks). Both recurrences are linear with the per-(channel, n) decay a_t = exp(dt_t * A_n),
// so a chunk's part can be computed from zero and corrected by a decay product
// exp(A_n * sum dt) times what flows in from the other chunks:
//
//   kernel 1 (chunk_summary_kernel), per chunk, forward from h = 0:
//        the state at every segment start (workspace checkpoints) and the dt sum up to it;
//        at the chunk end the state h_end, the dt sum S and X = sum_t (prod_{s..t} a) C_t dy_t,
//        the adjoint the chunk sends to the previous one (from zero at its own end);
//   kernel 2 (scan_backward_kernel), per chunk: the state flowing in, H = sum over earlier
//        chunks of h_end decayed, and the adjoint flowing in from later chunks, G, likewise from
//        X; then, segment by segment from the chunk's end:
//     a. recompute h_t = checkpoint + exp(A_n * dtsum) * H, then the segment's h_t, into shared
//        memory;
//     b. walk the segment backwards with g_t = dL/dh_t = C_t * dy_t + a_{t+1} * g_{t+1}
//        (g after the chunk's last token starts at G):
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
// Blocks per SM the gradient kernel's registers are budgeted for: 5 caps it at 96 registers
// (a few bytes of spills) instead of 124 (4 blocks). H100, fwd+bwd of one scan at batch 16: N 16,
// 64x64, c_w64 order 8.88 -> 6.84 ms and w8 4.26 -> 4.02 ms (the extra blocks also let the
// automatic count split sequences); N 8 unchanged (1.04 / 1.05 ms); 6 (80 registers) was slower.
#ifndef MAMBACSR_SCAN_BWD_MIN_BLOCKS
#define MAMBACSR_SCAN_BWD_MIN_BLOCKS 5
#endif

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + __expf(-x)); }

struct Problem {
    int64_t kc, k, c, n, length, u_channels;
    int u_shared, delta_softplus;
    int64_t n_seg_max;   // segments of the longest group sequence (checkpoint stride)
    int64_t chunk_cap;   // chunk stride of the per-chunk workspace arrays
    int64_t chunks;      // P: chunks per sequence (blocks along the sequence)
};

template <typename T>
struct Inputs {
    const T* u;
    const T* delta;
    const float* A;
    const T* Bs;
    const T* Cs;
    const float* D;           // may be null
    const float* delta_bias;  // may be null
    const T* dy;
};

struct Grads {
    float* du;
    float* ddelta;
    float* dA;
    float* dBs;
    float* dCs;
    float* dD;           // may be null
    float* ddelta_bias;  // may be null
};

// Float32 workspace, per (batch, channel of KC): see workspace_floats().
struct Workspace {
    float* ckpt;      // [NS][n_seg_max]  state at each segment start, from h = 0 at the chunk start
    float* dtsum;     // [n_seg_max]      sum of dt from the chunk start to the segment start
    float* h_end;     // [NS][chunk_cap]  state at the chunk end, from h = 0
    float* x_adj;     // [NS][chunk_cap]  sum_t (prod_{s..t} a) C_t dy_t over the chunk
    float* dt_chunk;  // [chunk_cap]      sum of dt over the chunk
};

// A segment's inputs, staged by the whole block with independent loads (one memory latency per
// segment, not per token), then read by the sequential loops from shared memory.
template <int NS>
struct Segment {
    static constexpr int kChannels = kThreads / NS;
    float u[kSeg][kChannels];
    float x[kSeg][kChannels];   // delta + bias (before softplus)
    float dt[kSeg][kChannels];
    float dy[kSeg][kChannels];
    float B[kSeg][NS];
    float C[kSeg][NS];
    float dB[kSeg][NS];
    float dC[kSeg][NS];
    int64_t src[kSeg];
    int64_t tgt[kSeg];
};

// Where this block works: its group, batch, channels and chunk of the group's sequence.
struct Place {
    int g, lane_n, my_ch;
    int64_t b, ch0, cl, ch, seq, chunk, seg_begin, seg_end;
    bool ch_ok, n_ok, active;
};

template <int NS>
__device__ Place place_of_block(const mambacsr_scan_order_t& order, const Problem& p) {
    constexpr int kChannels = kThreads / NS;
    Place w;
    const int64_t cblocks = (p.c + kChannels - 1) / kChannels;
    w.chunk = blockIdx.x / cblocks;
    w.g = blockIdx.y;
    w.b = blockIdx.z;
    w.lane_n = threadIdx.x % NS;
    w.my_ch = threadIdx.x / NS;
    w.ch0 = (int64_t)(blockIdx.x % cblocks) * kChannels;
    w.cl = w.ch0 + w.my_ch;
    w.ch_ok = w.cl < p.c;
    w.n_ok = w.ch_ok && w.lane_n < p.n;
    w.ch = w.g * p.c + (w.ch_ok ? w.cl : 0);  // channel of KC (idle slots alias channel 0: no writes)
    w.seq = mambacsr_order_seq_len(&order, w.g, p.length);
    const int64_t n_seg = (w.seq + kSeg - 1) / kSeg;
    const int64_t per_chunk = (n_seg + p.chunks - 1) / p.chunks;
    w.seg_begin = w.chunk * per_chunk;
    w.seg_end = w.seg_begin + per_chunk < n_seg ? w.seg_begin + per_chunk : n_seg;
    w.active = w.seg_begin < n_seg;  // the same for the whole block
    return w;
}

// Chunks of this block's group sequence (the same formula as place_of_block).
__device__ __forceinline__ int64_t chunks_of(int64_t seq, const Problem& p) {
    const int64_t n_seg = (seq + kSeg - 1) / kSeg;
    const int64_t per_chunk = (n_seg + p.chunks - 1) / p.chunks;
    return (n_seg + per_chunk - 1) / per_chunk;
}

template <typename T, int NS>
__device__ void stage(Segment<NS>& sm, const Inputs<T>& in, const mambacsr_scan_order_t& order, const Problem& p,
                      const Place& w, int64_t seg) {
    constexpr int kChannels = kThreads / NS;
    const int tid = threadIdx.x;
    const int64_t L = p.length;
    __syncthreads();  // the previous segment is done with the staging buffers
    if (tid < kSeg) {
        const int64_t t = seg * kSeg + tid;
        sm.src[tid] = t < w.seq ? mambacsr_order_source(&order, w.g, t, L) : -1;
        sm.tgt[tid] = t < w.seq ? mambacsr_order_target(&order, w.g, t, L) : -1;
    }
    __syncthreads();
    for (int i = tid; i < kSeg * kChannels; i += kThreads) {
        const int ti = i % kSeg, cj = i / kSeg;
        const int64_t c_in = w.ch0 + cj;
        const int64_t s = sm.src[ti];
        float uu = 0.f, dd = 0.f, dyv = 0.f, bias = 0.f;
        if (c_in < p.c) {
            const int64_t kc_ch = w.g * p.c + c_in;
            bias = in.delta_bias != nullptr ? in.delta_bias[kc_ch] : 0.f;
            if (s >= 0) {
                dd = to_f(in.delta[(w.b * p.kc + kc_ch) * L + s]);
                uu = to_f(in.u[(w.b * p.u_channels + (p.u_shared ? c_in : kc_ch)) * L + s]);
            }
            const int64_t o = sm.tgt[ti];
            if (o >= 0) dyv = to_f(in.dy[(w.b * p.kc + kc_ch) * L + o]);
        }
        const float x = dd + bias;
        sm.u[ti][cj] = uu;
        sm.x[ti][cj] = x;
        sm.dt[ti][cj] = p.delta_softplus ? softplus_f(x) : x;
        sm.dy[ti][cj] = dyv;
    }
    for (int i = tid; i < kSeg * NS; i += kThreads) {
        const int ti = i % kSeg, nn = i / kSeg;
        const int64_t s = sm.src[ti];
        const int64_t off = ((w.b * p.k + w.g) * p.n + nn) * L + s;
        const bool ok = s >= 0 && nn < p.n;
        sm.B[ti][nn] = ok ? to_f(in.Bs[off]) : 0.f;
        sm.C[ti][nn] = ok ? to_f(in.Cs[off]) : 0.f;
        sm.dB[ti][nn] = 0.f;
        sm.dC[ti][nn] = 0.f;
    }
    __syncthreads();
}

__device__ __forceinline__ int steps_of(const Place& w, int64_t seg) {
    const int64_t left = w.seq - seg * kSeg;
    return (int)(left < kSeg ? left : kSeg);
}

// Kernel 1: each chunk from zero (checkpoints, dt sums, and what it passes to its neighbours).
template <typename T, int NS>
__global__ void __launch_bounds__(kThreads)
chunk_summary_kernel(const Inputs<T> in, const Workspace ws, const mambacsr_scan_order_t order, const Problem p) {
    __shared__ Segment<NS> sm;
    const Place w = place_of_block<NS>(order, p);
    if (!w.active) return;
    const int64_t bc = w.b * p.kc + w.ch;
    const float A_n = w.n_ok ? in.A[w.ch * p.n + w.lane_n] : 0.f;
    float* ck = ws.ckpt + (bc * NS + w.lane_n) * p.n_seg_max;
    float* dts = ws.dtsum + bc * p.n_seg_max;
    float h = 0.f, decay = 1.f, x_adj = 0.f, dt_sum = 0.f;
    for (int64_t seg = w.seg_begin; seg < w.seg_end; ++seg) {
        stage<T, NS>(sm, in, order, p, w, seg);
        if (w.ch_ok) {  // idle slots alias channel 0's entries: they must not write
            ck[seg] = h;
            if (w.lane_n == 0) dts[seg] = dt_sum;
        }
        const int steps = steps_of(w, seg);
        for (int i = 0; i < steps; ++i) {
            const float dt = sm.dt[i][w.my_ch];
            const float a = __expf(dt * A_n);
            h = a * h + dt * sm.B[i][w.lane_n] * sm.u[i][w.my_ch];
            decay *= a;
            x_adj += decay * sm.C[i][w.lane_n] * sm.dy[i][w.my_ch];
            dt_sum += dt;
        }
    }
    if (w.ch_ok) {
        ws.h_end[(bc * NS + w.lane_n) * p.chunk_cap + w.chunk] = h;
        ws.x_adj[(bc * NS + w.lane_n) * p.chunk_cap + w.chunk] = x_adj;
        if (w.lane_n == 0) ws.dt_chunk[bc * p.chunk_cap + w.chunk] = dt_sum;
    }
}

// Kernel 2: the gradients, per chunk, with the state and adjoint flowing in from the others.
template <typename T, int NS>
__global__ void __launch_bounds__(kThreads, MAMBACSR_SCAN_BWD_MIN_BLOCKS)
scan_backward_kernel(const Inputs<T> in, const Grads gr, const Workspace ws, const mambacsr_scan_order_t order,
                     const Problem p) {
    __shared__ float h_s[kSeg][kThreads];  // h_t after token t of the segment
    __shared__ Segment<NS> sm;
    const Place w = place_of_block<NS>(order, p);
    if (!w.active) return;
    const int tid = threadIdx.x;
    const int lane_n = w.lane_n, my_ch = w.my_ch;
    const int64_t L = p.length;
    const int64_t bc = w.b * p.kc + w.ch;
    const int64_t chunk = w.chunk;

    const float A_n = w.n_ok ? in.A[w.ch * p.n + lane_n] : 0.f;
    const float D_c = (in.D != nullptr && w.ch_ok) ? in.D[w.ch] : 0.f;
    const int64_t u_ch = p.u_shared ? (w.ch_ok ? w.cl : 0) : w.ch;
    const float* ck = ws.ckpt + (bc * NS + lane_n) * p.n_seg_max;
    const float* dts = ws.dtsum + bc * p.n_seg_max;

    // What flows in: the state from the earlier chunks, the adjoint from the later ones.
    const float* h_end = ws.h_end + (bc * NS + lane_n) * p.chunk_cap;
    const float* x_adj = ws.x_adj + (bc * NS + lane_n) * p.chunk_cap;
    const float* dt_chunk = ws.dt_chunk + bc * p.chunk_cap;
    float h_in = 0.f, dh = 0.f;
    for (int64_t q = 0; q < chunk; ++q) h_in = h_end[q] + __expf(A_n * dt_chunk[q]) * h_in;
    for (int64_t q = chunks_of(w.seq, p) - 1; q > chunk; --q) dh = x_adj[q] + __expf(A_n * dt_chunk[q]) * dh;

    float dA_acc = 0.f, dD_acc = 0.f, dbias_acc = 0.f;
    for (int64_t seg = w.seg_end - 1; seg >= w.seg_begin; --seg) {
        stage<T, NS>(sm, in, order, p, w, seg);
        const int steps = steps_of(w, seg);
        const float h0 = ck[seg] + __expf(A_n * dts[seg]) * h_in;
        float h = h0;
        for (int i = 0; i < steps; ++i) {
            const float dt = sm.dt[i][my_ch];
            h = __expf(dt * A_n) * h + dt * sm.B[i][lane_n] * sm.u[i][my_ch];
            h_s[i][tid] = h;
        }
        for (int i = steps - 1; i >= 0; --i) {
            const float dt = sm.dt[i][my_ch], uu = sm.u[i][my_ch], dyv = sm.dy[i][my_ch];
            const float bb = sm.B[i][lane_n];
            const float a = __expf(dt * A_n);
            const float h_t = h_s[i][tid];
            const float h_prev = i > 0 ? h_s[i - 1][tid] : h0;
            const float g = dh + sm.C[i][lane_n] * dyv;
            dh = g * a;
            dA_acc += g * h_prev * a * dt;
            float ddt = g * (h_prev * a * A_n + bb * uu);
            float dun = g * dt * bb;
            float dBv = g * dt * uu;
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
                atomicAdd(&sm.dB[i][lane_n], dBv);
                atomicAdd(&sm.dC[i][lane_n], dCv);
            }
            if (lane_n == 0 && w.ch_ok) {
                const float dx = p.delta_softplus ? ddt * sigmoid_f(sm.x[i][my_ch]) : ddt;
                dbias_acc += dx;
                dD_acc += dyv * uu;
                const int64_t s = sm.src[i];
                if (s >= 0) {
                    gr.ddelta[bc * L + s] = dx;
                    const float du_v = dun + D_c * dyv;
                    float* du_p = gr.du + (w.b * p.u_channels + u_ch) * L + s;
                    if (p.u_shared) atomicAdd(du_p, du_v);
                    else *du_p = du_v;
                }
            }
        }
        __syncthreads();  // dB / dC of the segment complete
        for (int i = tid; i < kSeg * NS; i += kThreads) {
            const int ti = i % kSeg, nn = i / kSeg;
            const int64_t s = sm.src[ti];
            if (ti < steps && s >= 0 && nn < p.n) {
                const int64_t off = ((w.b * p.k + w.g) * p.n + nn) * L + s;
                atomicAdd(gr.dBs + off, sm.dB[ti][nn]);
                atomicAdd(gr.dCs + off, sm.dC[ti][nn]);
            }
        }
    }
    if (w.n_ok) atomicAdd(gr.dA + w.ch * p.n + lane_n, dA_acc);
    if (lane_n == 0 && w.ch_ok) {
        if (gr.dD != nullptr) atomicAdd(gr.dD + w.ch, dD_acc);
        if (gr.ddelta_bias != nullptr) atomicAdd(gr.ddelta_bias + w.ch, dbias_acc);
    }
}

int states_lanes(int64_t n) { return n <= 8 ? 8 : n <= 16 ? 16 : 32; }

int64_t chunk_cap(int64_t n_seg_max) {
    return n_seg_max < MAMBACSR_SCAN_BWD_MAX_CHUNKS ? n_seg_max : MAMBACSR_SCAN_BWD_MAX_CHUNKS;
}

// Floats of workspace per (batch, channel): the Workspace arrays.
int64_t workspace_floats(int64_t ns, int64_t n_seg_max) {
    const int64_t cap = chunk_cap(n_seg_max);
    return ns * n_seg_max + n_seg_max + 2 * ns * cap + cap;
}

// P: the requested count, or (0) the fewest chunks within 5 % of the best time in waves of the
// gradient kernel on this GPU: cost(P) = ceil(blocks * P / wave) / P, the waves each chunk's
// share of the sequence takes. One chunk per sequence already fills the GPU at large batches;
// small ones gain up to the full wave.
template <typename T, int NS>
int64_t pick_chunks(int requested, int64_t blocks_per_chunk, int64_t cap) {
    if (requested > 0) return requested < cap ? requested : cap;
    int dev = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, scan_backward_kernel<T, NS>, kThreads, 0) !=
            cudaSuccess)
        return -1;
    const int64_t wave = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
    auto cost = [&](int64_t chunks) {
        return (double)((blocks_per_chunk * chunks + wave - 1) / wave) / (double)chunks;
    };
    double best = cost(1);
    for (int64_t c = 2; c <= cap; ++c) best = cost(c) < best ? cost(c) : best;
    for (int64_t c = 1; c < cap; ++c)
        if (cost(c) <= 1.05 * best) return c;
    return cap;
}

template <typename T, int NS>
int launch(const Inputs<T>& in, const Grads& gr, float* workspace, int64_t batch, const mambacsr_scan_order_t& o,
           Problem p, int chunks, cudaStream_t stream) {
    constexpr int kChannels = kThreads / NS;
    const int64_t cblocks = (p.c + kChannels - 1) / kChannels;
    p.chunks = pick_chunks<T, NS>(chunks, cblocks * p.k * batch, p.chunk_cap);
    if (p.chunks < 1) return MAMBACSR_ERR_CUDA;
    if (cblocks * p.chunks > 0x7fffffff) return MAMBACSR_ERR_UNSUPPORTED;
    const int64_t rows = batch * p.kc;  // (batch, channel) pairs
    Workspace ws;
    ws.ckpt = workspace;
    ws.dtsum = ws.ckpt + rows * NS * p.n_seg_max;
    ws.h_end = ws.dtsum + rows * p.n_seg_max;
    ws.x_adj = ws.h_end + rows * NS * p.chunk_cap;
    ws.dt_chunk = ws.x_adj + rows * NS * p.chunk_cap;
    const dim3 grid((unsigned)(cblocks * p.chunks), (unsigned)p.k, (unsigned)batch);
    chunk_summary_kernel<T, NS><<<grid, kThreads, 0, stream>>>(in, ws, o, p);
    scan_backward_kernel<T, NS><<<grid, kThreads, 0, stream>>>(in, gr, ws, o, p);
    return cudaGetLastError() == cudaSuccess ? MAMBACSR_OK : MAMBACSR_ERR_CUDA;
}

template <typename T>
int dispatch_states(int ns, const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
                    const float* D, const float* delta_bias, const void* dy, const Grads& gr, float* workspace,
                    int64_t batch, const mambacsr_scan_order_t& o, const Problem& p, int chunks,
                    cudaStream_t stream) {
    Inputs<T> in;
    in.u = (const T*)u;
    in.delta = (const T*)delta;
    in.A = A;
    in.Bs = (const T*)Bs;
    in.Cs = (const T*)Cs;
    in.D = D;
    in.delta_bias = delta_bias;
    in.dy = (const T*)dy;
    if (ns == 8) return launch<T, 8>(in, gr, workspace, batch, o, p, chunks, stream);
    if (ns == 16) return launch<T, 16>(in, gr, workspace, batch, o, p, chunks, stream);
    return launch<T, 32>(in, gr, workspace, batch, o, p, chunks, stream);
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
    return (size_t)(batch * kc * workspace_floats(states_lanes(n), n_seg)) * sizeof(float);
}

int mambacsr_selective_scan_backward(const void* u, const void* delta, const float* A, const void* Bs,
                                     const void* Cs, const float* D, const float* delta_bias, const void* dy,
                                     float* du, float* ddelta, float* dA, float* dBs, float* dCs, float* dD,
                                     float* ddelta_bias, int64_t batch, int64_t kc, int64_t k, int64_t n,
                                     int64_t length, int u_shared, const mambacsr_scan_order_t* order,
                                     int dtype, int delta_softplus, int chunks, void* workspace,
                                     size_t workspace_bytes, cudaStream_t stream) {
    if (batch < 0 || kc < 0 || k <= 0 || n <= 0 || length < 0 || (kc % k) != 0 || chunks < 0)
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
    Problem p;
    p.kc = kc;
    p.k = k;
    p.c = kc / k;
    p.n = n;
    p.length = length;
    p.u_shared = u_shared != 0;
    p.u_channels = u_shared ? kc / k : kc;
    p.delta_softplus = delta_softplus != 0;
    p.n_seg_max = (mambacsr_order_max_seq_len(&o, k, length) + kSeg - 1) / kSeg;
    p.chunk_cap = chunk_cap(p.n_seg_max);
    p.chunks = 1;
    Grads gr;
    gr.du = du;
    gr.ddelta = ddelta;
    gr.dA = dA;
    gr.dBs = dBs;
    gr.dCs = dCs;
    gr.dD = dD;
    gr.ddelta_bias = ddelta_bias;
    const int ns = states_lanes(n);
    float* ws = (float*)workspace;
    switch (dtype) {
        case MAMBACSR_FLOAT32:
            return dispatch_states<float>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, gr, ws, batch, o, p, chunks,
                                          stream);
        case MAMBACSR_FLOAT16:
            return dispatch_states<__half>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, gr, ws, batch, o, p, chunks,
                                           stream);
        case MAMBACSR_BFLOAT16:
            return dispatch_states<__nv_bfloat16>(ns, u, delta, A, Bs, Cs, D, delta_bias, dy, gr, ws, batch, o, p,
                                                  chunks, stream);
        default:
            return MAMBACSR_ERR_UNSUPPORTED;
    }
}

}  // extern "C"
