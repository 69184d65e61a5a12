/*
 * mambacsr_scan_order.h - the token order of a SelectiveScan, as index arithmetic.
 *
 * One header for every native implementation (C CPU kernel, CUDA kernel, TensorRT plugin); the
 * Python reference builds the same orders from tensor permutes (mambacsr/scan_order.py) and the
 * tests hold the two to each other. Plain C99, usable from host and device code.
 *
 * The scan's inputs and output live in *storage order* (the model's own layout: the image's
 * token grid, row-major). Group g scans a *sequence* of seq_len(g) tokens; token t reads storage
 * position source(g, t) (or a virtual zero token when that is -1: u = delta = B = C = 0, so
 * dt = softplus(delta_bias)) and writes its output to storage position target(g, t) (nothing
 * when -1). Kinds:
 *
 *   IDENTITY     storage = sequence (length L); flag FLIP reverses it. The plain token-order
 *                contract: any selective-scan model maps onto it.
 *   WINDOW       storage is an H x W grid (L = H*W). Windows of w x w tiles, row-first inside
 *                (or COLUMN_FIRST: windows column-major and tokens column-major inside), the
 *                grid zero-padded to multiples of w (padding tokens are virtual), FLIP reverses
 *                the whole sequence. seq_len = ceil(H/w) * ceil(W/w) * w * w.
 *   CROSS_SCALE  storage is [half-resolution (H/2 x W/2) grid ; full-resolution H x W grid]
 *                (L = H*W/4 + H*W); w (the full-resolution window) divides H and W and is even.
 *                Each half-resolution token (windows of w/2) is followed by the 2x2
 *                full-resolution tokens it covers; FLIP reverses both sub-sequences (each
 *                group of five still starts with its half-resolution token). seq_len = 5*H*W/4.
 *                For COLUMN_FIRST on non-square grids the outputs land where the official
 *                MambaCSR code puts them (window rows and columns exchanged): official
 *                checkpoints were trained with that.
 */
#ifndef MAMBACSR_SCAN_ORDER_H
#define MAMBACSR_SCAN_ORDER_H

#include <stdint.h>

#ifdef __CUDACC__
#define MAMBACSR_HD __host__ __device__ __forceinline__
#else
#define MAMBACSR_HD static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MAMBACSR_SCAN_MAX_GROUPS 8

enum {
    MAMBACSR_ORDER_IDENTITY = 0,
    MAMBACSR_ORDER_WINDOW = 1,
    MAMBACSR_ORDER_CROSS_SCALE = 2
};

enum {
    MAMBACSR_ORDER_COLUMN_FIRST = 1,
    MAMBACSR_ORDER_FLIP = 2
};

typedef struct {
    int32_t kind;                              /* MAMBACSR_ORDER_* */
    int32_t height;                            /* H: full-resolution grid (unused for IDENTITY) */
    int32_t width;                             /* W */
    int32_t window[MAMBACSR_SCAN_MAX_GROUPS];  /* per group: w (unused for IDENTITY) */
    int32_t flags[MAMBACSR_SCAN_MAX_GROUPS];   /* per group: MAMBACSR_ORDER_COLUMN_FIRST | _FLIP */
} mambacsr_scan_order_t;

/* Storage length the order expects (IDENTITY: any, returns `length`). */
MAMBACSR_HD int64_t mambacsr_order_storage_length(const mambacsr_scan_order_t* o, int64_t length) {
    const int64_t hw = (int64_t)o->height * o->width;
    switch (o->kind) {
        case MAMBACSR_ORDER_WINDOW: return hw;
        case MAMBACSR_ORDER_CROSS_SCALE: return hw + hw / 4;
        default: return length;
    }
}

/* Number of tokens group g scans. */
MAMBACSR_HD int64_t mambacsr_order_seq_len(const mambacsr_scan_order_t* o, int g, int64_t length) {
    if (o->kind == MAMBACSR_ORDER_WINDOW) {
        const int64_t w = o->window[g];
        return ((o->height + w - 1) / w) * ((o->width + w - 1) / w) * w * w;
    }
    if (o->kind == MAMBACSR_ORDER_CROSS_SCALE) return 5 * ((int64_t)o->height * o->width / 4);
    return length;
}

/* The longest sequence of the k groups (the workspace and grid sizes of a call follow it). */
MAMBACSR_HD int64_t mambacsr_order_max_seq_len(const mambacsr_scan_order_t* o, int64_t k, int64_t length) {
    int64_t m = 0;
    for (int64_t g = 0; g < k; ++g) {
        const int64_t s = mambacsr_order_seq_len(o, (int)g, length);
        m = s > m ? s : m;
    }
    return m;
}

/* Validate an order for k groups and storage length `length`: 0 if valid, else a short reason. */
static inline const char* mambacsr_order_check(const mambacsr_scan_order_t* o, int64_t k, int64_t length) {
    if (o->kind == MAMBACSR_ORDER_IDENTITY) {
        for (int64_t g = 0; g < k && g < MAMBACSR_SCAN_MAX_GROUPS; ++g)
            if (o->flags[g] & ~MAMBACSR_ORDER_FLIP) return "identity order takes only the flip flag";
        return 0;
    }
    if (o->kind != MAMBACSR_ORDER_WINDOW && o->kind != MAMBACSR_ORDER_CROSS_SCALE) return "unknown order kind";
    if (k > MAMBACSR_SCAN_MAX_GROUPS) return "more groups than MAMBACSR_SCAN_MAX_GROUPS";
    if (o->height <= 0 || o->width <= 0) return "height and width must be positive";
    if (mambacsr_order_storage_length(o, length) != length) return "storage length does not match height and width";
    for (int64_t g = 0; g < k; ++g) {
        const int32_t w = o->window[g];
        if (w <= 0) return "window must be positive";
        if (o->flags[g] & ~(MAMBACSR_ORDER_COLUMN_FIRST | MAMBACSR_ORDER_FLIP)) return "unknown order flag";
        if (o->kind == MAMBACSR_ORDER_CROSS_SCALE && (w % 2 || o->height % w || o->width % w))
            return "cross-scale window must be even and divide height and width";
    }
    return 0;
}

/* Window order: storage position of sequence token t of group g, -1 for a padding token. */
MAMBACSR_HD int64_t mambacsr_order_window_source(const mambacsr_scan_order_t* o, int g, int64_t t) {
    const int64_t w = o->window[g], H = o->height, W = o->width;
    const int64_t hg = (H + w - 1) / w, wg = (W + w - 1) / w;
    int64_t p = (o->flags[g] & MAMBACSR_ORDER_FLIP) ? hg * wg * w * w - 1 - t : t;
    const int64_t inner = p % w;
    p /= w;
    const int64_t outer = p % w;
    const int64_t win = p / w;
    int64_t row, col;
    if (o->flags[g] & MAMBACSR_ORDER_COLUMN_FIRST) {
        row = (win % hg) * w + inner;
        col = (win / hg) * w + outer;
    } else {
        row = (win / wg) * w + outer;
        col = (win % wg) * w + inner;
    }
    return (row < H && col < W) ? row * W + col : -1;
}

/* Cross-scale order: storage position token t of group g reads (is_target = 0) or writes
 * (is_target = 1). They differ only for COLUMN_FIRST on non-square grids (official layout). */
MAMBACSR_HD int64_t mambacsr_order_cross_index(const mambacsr_scan_order_t* o, int g, int64_t t, int is_target) {
    const int64_t w = o->window[g], half = w / 2, H = o->height, W = o->width;
    const int64_t hg = H / w, wg = W / w, n_low = (H / 2) * (W / 2);
    const int flip = (o->flags[g] & MAMBACSR_ORDER_FLIP) != 0;
    const int col_first = (o->flags[g] & MAMBACSR_ORDER_COLUMN_FIRST) != 0;
    int64_t j = t / 5;
    const int64_t r = t % 5;
    if (flip) j = n_low - 1 - j;
    const int64_t b1 = j % half;
    j /= half;
    const int64_t a1 = j % half;
    const int64_t win = j / half;
    /* (a, b): position inside the window, a the slow axis of the scan (rows when row-first). */
    const int64_t gh = col_first ? win % hg : win / wg;
    const int64_t gw = col_first ? win / hg : win % wg;
    if (r == 0) {
        const int64_t lr = gh * half + (col_first ? b1 : a1);
        const int64_t lc = gw * half + (col_first ? a1 : b1);
        return lr * (W / 2) + lc;
    }
    const int64_t i = flip ? 4 - r : r - 1;
    const int64_t a = 2 * a1 + i / 2, b = 2 * b1 + i % 2;
    if (col_first && is_target) {
        /* Official un-scan: window index split row-major over (hg, wg), in-window (b, a), into a
         * (wg*w) x (hg*w) grid read back as H x W. The exact inverse when H == W. */
        const int64_t i0 = win / wg, i1 = win % wg;
        return n_low + (i1 * w + b) * (hg * w) + (i0 * w + a);
    }
    const int64_t row = gh * w + (col_first ? b : a);
    const int64_t col = gw * w + (col_first ? a : b);
    return n_low + row * W + col;
}

/* Storage position sequence token t of group g reads; -1: a virtual zero token. */
MAMBACSR_HD int64_t mambacsr_order_source(const mambacsr_scan_order_t* o, int g, int64_t t, int64_t length) {
    switch (o->kind) {
        case MAMBACSR_ORDER_WINDOW: return mambacsr_order_window_source(o, g, t);
        case MAMBACSR_ORDER_CROSS_SCALE: return mambacsr_order_cross_index(o, g, t, 0);
        default: return (o->flags[g] & MAMBACSR_ORDER_FLIP) ? length - 1 - t : t;
    }
}

/* Storage position the output of token t of group g is written to; -1: not written. */
MAMBACSR_HD int64_t mambacsr_order_target(const mambacsr_scan_order_t* o, int g, int64_t t, int64_t length) {
    if (o->kind == MAMBACSR_ORDER_CROSS_SCALE) return mambacsr_order_cross_index(o, g, t, 1);
    return mambacsr_order_source(o, g, t, length);
}

#ifdef __cplusplus
}
#endif

#endif /* MAMBACSR_SCAN_ORDER_H */
