/*
 * mambacsr_scan.h - C ABI of the MambaCSR selective-scan CUDA kernel.
 *
 * One kernel, two callers: the PyTorch binding (mambacsr/ops/scan_cuda.py, through ctypes) and
 * the TensorRT plugin (plugins/selectiveScan). Contract (DESIGN.md), for batch b, channel c
 * of group g = c / C (C = KC / K, c' = c % C), state n, sequence token t of group g
 * (order: mambacsr_scan_order.h), with h = 0 at t = 0, s = source(g, t), o = target(g, t):
 *
 *   uu, dd, BB, CC = u[b, c or c', s], delta[b,c,s], Bs[b,g,:,s], Cs[b,g,:,s]  (all 0 if s < 0)
 *   dt        = softplus(dd + delta_bias[c])                (no softplus if delta_softplus == 0)
 *   h[n]      = exp(dt * A[c,n]) * h[n] + dt * BB[n] * uu
 *   y[b,c,o]  = sum_n CC[n] * h[n] + D[c] * uu                   (not stored if o < 0)
 *
 * Layouts (contiguous, row-major, storage order, length L): u (batch, KC, L), or (batch, C, L)
 * shared by the K groups (MAMBACSR_LAYOUT_U_SHARED); delta (batch, KC, L); y (batch, KC, L), or
 * token rows (batch, K, L, C) with y[b, g, o, c'] (MAMBACSR_LAYOUT_Y_TOKENS: what a following
 * per-token LayerNorm or projection reads without a transpose); Bs, Cs (batch, K, N, L), all
 * of `dtype`; A (KC, N) float32; D, delta_bias (KC,) float32 (either may be NULL: zero).
 * State and sums are float32. The call only launches on `stream`: it never allocates (scratch
 * comes from the caller's workspace), never synchronizes, and is safe to capture in a CUDA graph.
 */
#ifndef MAMBACSR_SCAN_H
#define MAMBACSR_SCAN_H

#include <stdint.h>
#include <stddef.h>
#include <cuda_runtime_api.h>

#include "../mambacsr_scan_order.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MAMBACSR_API __declspec(dllexport)
#else
#define MAMBACSR_API __attribute__((visibility("default")))
#endif

#define MAMBACSR_SCAN_ABI_VERSION 4
#define MAMBACSR_SCAN_MAX_STATES 64

/* `layout` flags of mambacsr_selective_scan_ordered (ABI 2 called the argument u_shared: 0/1
 * mean the same). */
#define MAMBACSR_LAYOUT_U_SHARED 1
#define MAMBACSR_LAYOUT_Y_TOKENS 2

typedef enum {
    MAMBACSR_FLOAT32 = 0,
    MAMBACSR_FLOAT16 = 1,
    MAMBACSR_BFLOAT16 = 2
} mambacsr_dtype_t;

typedef enum {
    MAMBACSR_OK = 0,
    MAMBACSR_ERR_INVALID_ARGUMENT = 1, /* null pointer, negative size, KC % K != 0, ... */
    MAMBACSR_ERR_UNSUPPORTED = 2,      /* N > MAMBACSR_SCAN_MAX_STATES, unknown dtype */
    MAMBACSR_ERR_CUDA = 3              /* the launch failed (cudaGetLastError) */
} mambacsr_status_t;

/* The contract above. Returns a mambacsr_status_t. Empty problems (batch, KC or L == 0) are a
 * no-op returning MAMBACSR_OK. */
MAMBACSR_API int mambacsr_selective_scan(
    const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
    int dtype, int delta_softplus, cudaStream_t stream);

/* Same, with an explicit kernel variant (0 = automatic choice; see mambacsr_scan_variant_name).
 * For benchmarks and tests. */
MAMBACSR_API int mambacsr_selective_scan_ex(
    const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
    int dtype, int delta_softplus, int variant, cudaStream_t stream);

/* The full contract: storage-order I/O, a scan order (NULL: identity), `layout` flags
 * (MAMBACSR_LAYOUT_U_SHARED: u is (batch, KC / K, L); MAMBACSR_LAYOUT_Y_TOKENS: y is
 * (batch, K, L, KC / K); other bits: invalid argument), a kernel variant (0 = automatic) and a workspace
 * (16-byte aligned, contents undefined on entry and exit). With at least
 * mambacsr_selective_scan_workspace_size() bytes of workspace, small batches split each sequence
 * into chunks scanned in parallel and the order's token positions are computed once per call;
 * with less (or NULL) the single-pass kernel runs, computing positions in every block. The
 * result is the same either way, up to float32 rounding. */
MAMBACSR_API int mambacsr_selective_scan_ordered(
    const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length, int layout,
    const mambacsr_scan_order_t* order, int dtype, int delta_softplus, int variant,
    void* workspace, size_t workspace_bytes, cudaStream_t stream);

/* Element strides of the inputs: u (batch, channel, token), where channel counts KC, or C when
 * u is shared; delta (batch, channel, token); Bs, Cs (batch, group, state, token). Any
 * non-negative strides, so views read in place: token rows (token stride = the row's pitch,
 * channel stride 1), or slices of one projection's output. Vector loads need token stride 1. */
typedef struct {
    int64_t u[3];
    int64_t delta[3];
    int64_t B[4];
    int64_t C[4];
} mambacsr_scan_strides_t;

/* mambacsr_selective_scan_ordered with strided inputs (`strides` NULL: contiguous, the layouts
 * above) and, optionally, the order's token positions computed once by
 * mambacsr_scan_order_tables for this order, K and length (`order_tables` NULL: computed into
 * the workspace in every call). y is contiguous in the layout `layout` names. Strides equal
 * to the contiguous layout's run the contiguous kernels; any others a strided instantiation
 * (16-byte token-row loads where channels and states are adjacent and aligned, element loads
 * otherwise). */
MAMBACSR_API int mambacsr_selective_scan_strided(
    const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
    const float* D, const float* delta_bias, void* y,
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length, int layout,
    const mambacsr_scan_strides_t* strides, const mambacsr_scan_order_t* order,
    const int* order_tables, int dtype, int delta_softplus, int variant, void* workspace,
    size_t workspace_bytes, cudaStream_t stream);

/* Bytes of an order's token-position tables (0 for the identity order or NULL), and the call
 * that writes them to `out` (device memory of at least that size) on `stream`: reusable by
 * every scan call with the same order, K and length. */
MAMBACSR_API size_t mambacsr_scan_order_tables_size(const mambacsr_scan_order_t* order, int64_t k,
                                                    int64_t length);
MAMBACSR_API int mambacsr_scan_order_tables(const mambacsr_scan_order_t* order, int64_t k, int64_t length,
                                            int* out, cudaStream_t stream);

/* Workspace bytes the automatic choice can use for this problem (0 when it needs none). */
MAMBACSR_API size_t mambacsr_selective_scan_workspace_size(
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
    const mambacsr_scan_order_t* order, int dtype);

/* `variant` of the calls above: a kernel id (1..mambacsr_scan_variant_count(), 0 = automatic)
 * plus 256 * chunks (0 = automatic, 1 = single pass, >= 2 = that many chunks; a requested
 * chunk count without its workspace is an invalid argument). For benchmarks and tests. */
#define MAMBACSR_SCAN_VARIANT(kernel, chunks) ((kernel) + 256 * (chunks))

/* Workspace bytes for an explicit `variant` (0: the same as _workspace_size). */
MAMBACSR_API size_t mambacsr_selective_scan_workspace_size_ex(
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
    const mambacsr_scan_order_t* order, int dtype, int variant);

/* Number of variants (ids 1..count) and a short name for one ("" when out of range). */
MAMBACSR_API int mambacsr_scan_variant_count(void);
MAMBACSR_API const char* mambacsr_scan_variant_name(int variant);

/* Human-readable text of a status code; static storage. */
MAMBACSR_API const char* mambacsr_scan_status_string(int status);

/* MAMBACSR_SCAN_ABI_VERSION of the library. */
MAMBACSR_API int mambacsr_scan_abi_version(void);

/* MAMBACSR_SCAN_MAX_STATES of the library (bindings read it instead of copying the number). */
MAMBACSR_API int mambacsr_scan_max_states(void);

#ifdef __cplusplus
}
#endif

#endif /* MAMBACSR_SCAN_H */
