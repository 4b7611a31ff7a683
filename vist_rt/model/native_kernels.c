/* vist-rt native step kernels: the non-matmul parts of one streaming Vi-ST step.
 *
 * Compiled on first use by vist_rt/model/native.py (cc -O3 -march=native) and called through
 * ctypes. Every array is float32, channels-last, with the channel count padded to a multiple of
 * 16 (pad channels hold zeros and stay zero). Matmuls stay in PyTorch; these kernels do the
 * depthwise convolutions, im2col, pooling, biases and the pointwise non-linearities, each in
 * one pass over the frame, split by rows over `nt` OpenMP threads (libgomp: the same pool as
 * PyTorch's, which has loaded it first). No allocation, no copies of the state: every ring is
 * written once per frame (mostly by the matmul that makes the frame) and read in place.
 */
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int vi16 __attribute__((vector_size(64), aligned(4)));

#define LD(p) (*(const v16 *)(p))
#define ST(p, v) (*(v16 *)(p) = (v))

static inline v16 relu(v16 a) {
    v16 z = {0};
    return (v16)((vi16)a & (vi16)(a > z));
}

static inline v16 leaky(v16 a) {
    v16 z = {0};
    vi16 m = (vi16)(a > z);
    return (v16)(((vi16)a & m) | ((vi16)(a * 0.1f) & ~m));
}

int vist_native_abi(void) { return 6; }

/* Where the frames of a temporal window lie: frame f (oldest first) is ring slot
 * (start + f * step) % L, slots fstride floats apart; rows rs apart, positions C apart. */
typedef struct {
    long fstride, rs;
    int start, step, L, nf, C;
} frames_t;

/* Depthwise 3x3 (space) x nf (time) for XB outputs in a row, one 16-channel block.
 * at: offset of output 0's window (kernel row 0, column 0) inside a slot; kernel rows ky0..ky1-1
 * are read, the others are zero padding; lo/hi: the window's first/last column is zero padding.
 * w: [nf][3][3][16], this channel block's kernel (frame 0 = oldest). */
#define DW_BLOCK(XB)                                                                                      \
    static inline void dw_block_##XB(const float *ring, const frames_t *fr, long at, const float *w,       \
                                     v16 bias, int ky0, int ky1, int lo, int hi, v16 *restrict out) {     \
        v16 acc[XB], zero = {0};                                                                          \
        long C = fr->C, rs = fr->rs;                                                                      \
        for (int j = 0; j < XB; j++) acc[j] = bias;                                                       \
        for (int f = 0, slot = fr->start; f < fr->nf; f++, slot = (slot + fr->step) % fr->L) {             \
            const float *base = ring + slot * fr->fstride + at;                                          \
            for (int ky = ky0; ky < ky1; ky++) {                                                          \
                const float *row = base + ky * rs;                                                        \
                const float *wr = w + (long)((f * 3 + ky) * 3) * 16;                                       \
                v16 w0 = LD(wr), w1 = LD(wr + 16), w2 = LD(wr + 32);                                      \
                v16 in[XB + 2];                                                                           \
                in[0] = lo ? zero : LD(row);                                                              \
                for (int j = 1; j < XB + 1; j++) in[j] = LD(row + j * C);                                  \
                in[XB + 1] = hi ? zero : LD(row + (XB + 1) * C);                                          \
                for (int j = 0; j < XB; j++) {                                                            \
                    acc[j] += w0 * in[j];                                                                 \
                    acc[j] += w1 * in[j + 1];                                                             \
                    acc[j] += w2 * in[j + 2];                                                             \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        for (int j = 0; j < XB; j++) out[j] = acc[j];                                                     \
    }
DW_BLOCK(8)
DW_BLOCK(4)
DW_BLOCK(2)
DW_BLOCK(1)

/* Two depthwise branches of one CMST block at once, for XB outputs in a row, one channel block:
 * the short window's frames are the newest of the long one's, so each frame is read once.
 * fr: the long window; ns: the short window's length; wl, ws: [nf][3][3][16] kernels. */
#define DW_BLOCK2(XB)                                                                                     \
    static inline void dw_block2_##XB(const float *ring, const frames_t *fr, int ns, long at, const float *wl, \
                                      const float *ws, v16 bl, v16 bs, v16 *restrict outl,                 \
                                      v16 *restrict outs) {                                                \
        v16 al[XB], as[XB];                                                                               \
        long C = fr->C, rs = fr->rs;                                                                      \
        int skip = fr->nf - ns;                                                                           \
        for (int j = 0; j < XB; j++) al[j] = bl, as[j] = bs;                                              \
        for (int f = 0, slot = fr->start; f < fr->nf; f++, slot = (slot + fr->step) % fr->L) {             \
            const float *base = ring + slot * fr->fstride + at;                                          \
            for (int ky = 0; ky < 3; ky++) {                                                              \
                const float *row = base + ky * rs;                                                        \
                v16 in[XB + 2];                                                                           \
                for (int j = 0; j < XB + 2; j++) in[j] = LD(row + j * C);                                  \
                const float *w1 = wl + (long)((f * 3 + ky) * 3) * 16;                                      \
                v16 a0 = LD(w1), a1 = LD(w1 + 16), a2 = LD(w1 + 32);                                      \
                for (int j = 0; j < XB; j++) {                                                            \
                    al[j] += a0 * in[j];                                                                  \
                    al[j] += a1 * in[j + 1];                                                              \
                    al[j] += a2 * in[j + 2];                                                              \
                }                                                                                         \
                if (f >= skip) {                                                                          \
                    const float *w2 = ws + (long)(((f - skip) * 3 + ky) * 3) * 16;                         \
                    v16 b0 = LD(w2), b1 = LD(w2 + 16), b2 = LD(w2 + 32);                                  \
                    for (int j = 0; j < XB; j++) {                                                        \
                        as[j] += b0 * in[j];                                                              \
                        as[j] += b1 * in[j + 1];                                                          \
                        as[j] += b2 * in[j + 2];                                                          \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        for (int j = 0; j < XB; j++) outl[j] = al[j], outs[j] = as[j];                                    \
    }
DW_BLOCK2(4)
DW_BLOCK2(2)
DW_BLOCK2(1)

/* A row of two branches (see dw_block2) of a CMST block, added to out as LeakyReLU(0.1) each.
 * wl, ws: [C/16][nf][3][3][16]; bl, bs: [C]. */
static void dw_row2(const float *ring, const frames_t *fr, int ns, long at, const float *wl, const float *ws,
                    const float *bl, const float *bs, int o, float *out, long os) {
    v16 al[4], as[4];
    long C = fr->C;
    for (int x = 0; x < o;) {
        int left = o - x, xb = left >= 4 ? 4 : left >= 2 ? 2 : 1;
        for (int c = 0; c < C; c += 16) {
            long a = at + (long)x * C + c;
            const float *wlc = wl + (c / 16) * (long)fr->nf * 144, *wsc = ws + (c / 16) * (long)ns * 144;
            v16 b1 = LD(bl + c), b2 = LD(bs + c);
            switch (xb) {
            case 4: dw_block2_4(ring, fr, ns, a, wlc, wsc, b1, b2, al, as); break;
            case 2: dw_block2_2(ring, fr, ns, a, wlc, wsc, b1, b2, al, as); break;
            default: dw_block2_1(ring, fr, ns, a, wlc, wsc, b1, b2, al, as); break;
            }
            for (int j = 0; j < xb; j++) {
                float *p = out + (long)(x + j) * os + c;
                ST(p, LD(p) + leaky(al[j]) + leaky(as[j]));
            }
        }
        x += xb;
    }
}

/* One output row of a depthwise conv: `o` outputs, positions os apart, every channel block. The
 * channel blocks of a few positions are done together: a position's channels are one contiguous
 * run (channels-last rows of C floats put one block of every position in the same few L1 sets).
 * at: offset (in a slot) of output 0's window top-left (kernel row 0, column 0); pad: the input
 * has o columns and a zero border of 1 (column -1, column o and the rows outside ky0..ky1), else
 * o + 2 columns. w: [C/16][nf][3][3][16]. act 0: store ReLU; act 1: add LeakyReLU(0.1) to out. */
static void dw_row(const float *ring, const frames_t *fr, long at, const float *w, const float *bias, int o, int ky0,
                   int ky1, int pad, float *out, long os, int act) {
    v16 acc[8];
    long C = fr->C, wstride = (long)fr->nf * 9 * 16;
    for (int x = 0; x < o;) {
        int left = o - x, xb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        int lo = pad && x == 0, hi = pad && x + xb == o;
        for (int c = 0; c < C; c += 16) {
            long a = at + (long)x * C + c;
            const float *wc = w + (c / 16) * wstride;
            v16 b = LD(bias + c);
            switch (xb) {
            case 8: dw_block_8(ring, fr, a, wc, b, ky0, ky1, lo, hi, acc); break;
            case 4: dw_block_4(ring, fr, a, wc, b, ky0, ky1, lo, hi, acc); break;
            case 2: dw_block_2(ring, fr, a, wc, b, ky0, ky1, lo, hi, acc); break;
            default: dw_block_1(ring, fr, a, wc, b, ky0, ky1, lo, hi, acc); break;
            }
            for (int j = 0; j < xb; j++) {
                float *p = out + (long)(x + j) * os + c;
                if (act) ST(p, LD(p) + leaky(acc[j]));
                else ST(p, relu(acc[j]));
            }
        }
        x += xb;
    }
}

/* One C3TCN layer's depthwise half for frame t (dilation d).
 * ring: [2d+1][B][G][G][C], frame t in slot t % (2d+1): the slot written at t held frame t-2d-1,
 * read one step before (still in cache); frames t-2d, t-d, t are slots newest+1, newest+d+1,
 * newest (mod 2d+1). Frame t is first completed there (the matmul that made it left out its bias
 * and residual): copied from src ([B, G, G, C]) when not NULL, plus b_prev ([C]) and res (the
 * previous layer's input frame, [B, G, G, C]) when not NULL.
 * w: [C/16][3][3][3][16] the depthwise kernel, BatchNorm folded, oldest frame first; b_dw: [C];
 * h: [B, G, G, C] out, ReLU(depthwise + b_dw), zero padding of 1 in space. */
void vist_c3tcn(float *ring, int newest, int d, const float *src, const float *b_prev, const float *w,
                const float *b_dw, float *h, int B, int G, int C, const float *res, int nt) {
    long rs = (long)G * C, fs = G * rs, ss = B * fs;
    int L = 2 * d + 1;
    frames_t fr = {ss, rs, (newest + 1) % L, d, L, 3, C};
    float *slot = ring + newest * ss;
#pragma omp parallel num_threads(nt)
    {
        if (src || b_prev || res) { /* every row first: the rows a thread reads are not all its own */
#pragma omp for schedule(static)
            for (int r = 0; r < B * G; r++) {
                float *xr = slot + (long)r * rs;
                const float *sr = src ? src + (long)r * rs : xr, *rr = res ? res + (long)r * rs : NULL;
                for (long p = 0; p < rs; p += 16) {
                    v16 v = LD(sr + p);
                    if (b_prev) v += LD(b_prev + p % C);
                    if (rr) v += LD(rr + p);
                    ST(xr + p, v);
                }
            }
        }
#pragma omp for schedule(static)
        for (int r = 0; r < B * G; r++) {
            int b = r / G, y = r % G;
            /* window rows y-1..y+1, columns -1..: an offset, only read inside the frame */
            long at = b * fs + (long)(y - 1) * rs - C;
            if (y + 2 < G) /* the older frames' row the next output row adds: fetch it now */
                for (int i = 0; i < 2; i++) {
                    const float *nx = ring + ((fr.start + i * d) % L) * ss + b * fs + (long)(y + 2) * rs;
                    for (long k = 0; k < rs; k += 16) __builtin_prefetch(nx + k, 0, 3);
                }
            dw_row(ring, &fr, at, w, b_dw, G, y == 0, y == G - 1 ? 2 : 3, 1, h + (long)r * rs, C, 0);
        }
    }
}

/* A CMST block, before its matmuls, for frame t in ring slot s.
 * ring: [L][B][H][H][C]. When y is not NULL, frame t is first made there as y + gate * (m + bias)
 * (the AdaLN-Zero output: y, gate, m [B*H*H, C], bias [C]); else the previous block's matmul has
 * written it, without its bias, which is added here when not NULL.
 * patches: [B*o*o, ps] (im2col, rows (ky, kx, c) for the cr real channels: 9 cr <= ps - 16),
 * written when do_patches; cat: [B*o*o, 2C],
 * columns C..2C get AvgPool3x3(frame). o = H - 2. */
void vist_cmst_pre(float *ring, int s, const float *y, const float *gate, const float *m, const float *bias,
                   float *patches, int do_patches, long ps, int cr, float *cat, int B, int H, int C, int nt) {
    long fs = (long)H * H * C, o = H - 2;
    float *x = ring + s * B * fs;
#pragma omp parallel num_threads(nt)
    {
        if (y) { /* frame t = y + gate * (m + bias) */
#pragma omp for schedule(static)
            for (long r = 0; r < B * H; r++)
                for (long p = r * H * C; p < (r + 1) * H * C; p += 16)
                    ST(x + p, LD(y + p) + LD(gate + p) * (LD(m + p) + LD(bias + p % C)));
        } else if (bias) { /* the previous block's matmul left its bias out */
#pragma omp for schedule(static)
            for (long r = 0; r < B * H; r++)
                for (long p = r * H * C; p < (r + 1) * H * C; p += 16) ST(x + p, LD(x + p) + LD(bias + p % C));
        }
#pragma omp for schedule(static)
        for (long r = 0; r < B * o; r++) {
            long b = r / o, yy = r % o;
            const float *xb = x + b * fs;
            for (long xx = 0; xx < o; xx++) {
                long n = r * o + xx;
                /* taps in order, cr channels each: a tap's last block spills pad zeros into the next
                 * tap's first channels, which the next tap then overwrites (and the last into the row's
                 * spare 16) */
                float *pr = patches + n * ps;
                for (int k = 0; do_patches && k < 9; k++)
                    for (int c = 0; c < C; c += 16)
                        ST(pr + k * cr + c, LD(xb + ((yy + k / 3) * H + xx + k % 3) * C + c));
                for (int c = 0; c < C; c += 16) {
                    v16 sum = {0};
                    for (int k = 0; k < 9; k++) sum += LD(xb + ((yy + k / 3) * H + xx + k % 3) * C + c);
                    ST(cat + n * 2 * C + C + c, sum * (1.0f / 9.0f));
                }
            }
        }
    }
}

/* A CMST block's branches for frame t (ring slot s), after the dense matmul.
 * mixed: [B*o*o, dense*C] the dense (w = 1) branches before their bias (b_mixed [dense*C]) and
 * activation; ring: [L][B][H][H][C];
 * nb depthwise branches of windows win[j] <= L, kernels w_dw concatenated ([C/16][win[j]][3][3][16]
 * each, oldest frame first), biases b_dw ([nb][C]); cat: [B*o*o, 2C], columns 0..C get the sum of
 * every branch's LeakyReLU(0.1). */
void vist_cmst_post(const float *mixed, int dense, const float *b_mixed, const float *ring, int s, int L, int nb,
                    const int *win, const float *w_dw, const float *b_dw, float *cat, int B, int H, int C, int nt) {
    long fs = (long)H * H * C, o = H - 2;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (long r = 0; r < B * o; r++) {
        long b = r / o, y = r % o;
        for (long n = r * o; n < (r + 1) * o; n++)
            for (int c = 0; c < C; c += 16) {
                v16 acc = {0};
                for (int k = 0; k < dense; k++)
                    acc += leaky(LD(mixed + (n * dense + k) * C + c) + LD(b_mixed + k * C + c));
                ST(cat + n * 2 * C + c, acc);
            }
        if (y + 3 < H) { /* the row the next output row adds, in every frame of the longest window */
            int nf = 0;
            for (int j = 0; j < nb; j++) nf = win[j] > nf ? win[j] : nf;
            for (int f = 0; f < nf; f++) {
                const float *nx = ring + (((s - f) % L + L) % L) * B * fs + b * fs + (y + 3) * H * C;
                for (long k = 0; k < H * C; k += 16) __builtin_prefetch(nx + k, 0, 3);
            }
        }
        if (nb == 2) { /* two windows, one pass over the frames of the longer */
            int lg = win[1] > win[0], nl = win[lg], ns = win[1 - lg];
            const float *w0 = w_dw, *w1 = w_dw + (long)win[0] * 9 * C;
            frames_t fr = {B * fs, (long)H * C, ((s - nl + 1) % L + L) % L, 1, L, nl, C};
            dw_row2(ring, &fr, ns, b * fs + y * H * C, lg ? w1 : w0, lg ? w0 : w1, b_dw + (long)lg * C,
                    b_dw + (long)(1 - lg) * C, (int)o, cat + r * o * 2 * C, 2L * C);
            continue;
        }
        const float *w = w_dw;
        for (int j = 0; j < nb; j++) {
            int nf = win[j];
            frames_t fr = {B * fs, (long)H * C, ((s - nf + 1) % L + L) % L, 1, L, nf, C};
            dw_row(ring, &fr, b * fs + y * H * C, w, b_dw + (long)j * C, (int)o, 0, 3, 0, cat + r * o * 2 * C,
                   2L * C, 1);
            w += (long)nf * 9 * C;
        }
    }
}
