/*
 * mambacsr_scan_bwd.h - C ABI of the SelectiveScan backward (training only; not in the plugin).
 *
 * Gradients of the storage-order contract of mambacsr_scan.h (same inputs, same scan order),
 * given dy (batch, KC, L) of `dtype`. State and sums are float32; every gradient is float32:
 *
 *   du      (batch, KC, L), or (batch, KC / K, L) when u_shared (the K groups add into it)
 *   ddelta  (batch, KC, L)         dA (KC, N)        dBs, dCs (batch, K, N, L)
 *   dD, ddelta_bias (KC,)
 *
 * Every gradient buffer must be zero on entry: the kernel adds into them (atomics across
 * channels for dBs/dCs, across the batch for dA/dD/ddelta_bias). The forward is recomputed from
 * float32 states checkpointed every MAMBACSR_SCAN_BWD_SEGMENT tokens into the workspace, so the
 * call needs no forward activations. It only launches on `stream` and never allocates.
 *
 * Each group sequence is cut into `chunks` pieces of whole segments scanned in parallel (two
 * kernels: per-chunk summaries, then the gradients with the carries between chunks); 0 picks
 * the count from the current GPU's occupancy (the fewest chunks that fill whole waves). Any count gives the same gradients up to
 * float32 rounding; it is capped at the segment count and MAMBACSR_SCAN_BWD_MAX_CHUNKS.
 */
#ifndef MAMBACSR_SCAN_BWD_H
#define MAMBACSR_SCAN_BWD_H

#include "mambacsr_scan.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MAMBACSR_SCAN_BWD_SEGMENT 32
#define MAMBACSR_SCAN_BWD_MAX_STATES 32
#define MAMBACSR_SCAN_BWD_MAX_CHUNKS 64

/* Workspace bytes of mambacsr_selective_scan_backward for this problem. */
MAMBACSR_API size_t mambacsr_selective_scan_backward_workspace_size(
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length,
    const mambacsr_scan_order_t* order);

/* The gradients above. Returns a mambacsr_status_t (UNSUPPORTED: N > MAMBACSR_SCAN_BWD_MAX_STATES). */
MAMBACSR_API int mambacsr_selective_scan_backward(
    const void* u, const void* delta, const float* A, const void* Bs, const void* Cs,
    const float* D, const float* delta_bias, const void* dy,
    float* du, float* ddelta, float* dA, float* dBs, float* dCs, float* dD, float* ddelta_bias,
    int64_t batch, int64_t kc, int64_t k, int64_t n, int64_t length, int u_shared,
    const mambacsr_scan_order_t* order, int dtype, int delta_softplus, int chunks,
    void* workspace, size_t workspace_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* MAMBACSR_SCAN_BWD_H */
