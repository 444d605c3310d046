"""Triton kernels of scan_attention; imported only by ``ledit.ops.scan_attention_triton`` when triton is installed.

Same tiling as csrc/scan_attention/scan_tiles.h, with power-of-two tiles (Triton block shapes): a tile is
TILE_H x TILE_W grid positions (TILE_H * TILE_W = BLOCK), positions outside the grid are padding. Each
(query tile, key tile) pair is classified from the two rectangles: masked pairs are skipped, fully visible ones
run without the per-element mask, partial ones (and edge tiles holding padding) evaluate it. q, k, v, out are
contiguous (B, N, H, D); scores are in base 2 (qk_scale = softmax_scale * log2(e)); lse is in natural log.

The head count and the grid (h, w) are runtime arguments; the tile counts are compile-time constants because
Triton 3.6's interpreter (CI's) cannot loop to a runtime bound under numpy >= 2.4, so a new grid compiles new
kernels once (Triton caches them on disk).

With PACKED, a call is a packed sequence of images (csrc/common/packed_images.h): program 0's index is a slot in
the images' tiles laid end to end, the image is found by binary search on TILE_OFFSETS, each image has its own
(h, w), first token and power-of-two tile width (TILE_WIDTHS, from the launcher's rule), and a tile pair is only
ever formed within an image. Its tile counts are runtime values: the key-tile loop runs to a runtime bound, as a
``for`` loop on the GPU (software-pipelined) and, with WHILE_LOOP (the interpreter's workaround), as a ``while``
loop, which the interpreter runs; both run the same step function.
"""

import triton
import triton.language as tl

from ledit.ops.packing_triton_kernels import segment_of

# tl.constexpr: the GPU compiler refuses plain Python globals inside @jit code (the interpreter does not check).
MASKED, PARTIAL, VISIBLE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _visible(SCAN: tl.constexpr, q_row, q_col, k_row, k_col, w):
    """scan_visible() of csrc/common/scan_mask.h on broadcast coordinate tensors (scan index as in SCANS)."""
    lower_right = (k_row <= q_row) & (k_col <= q_col)
    if SCAN == 0:
        result = (k_row >= 0) | (q_row >= 0)
    elif SCAN == 1:
        result = k_row * w + k_col <= q_row * w + q_col
    elif SCAN == 2:
        result = lower_right
    elif SCAN == 3:
        near = (k_row - q_row <= 1) & (q_row - k_row <= 1) & (k_col - q_col <= 1) & (q_col - k_col <= 1)
        result = lower_right | near
    else:
        result = (k_row <= q_row) | (k_col <= q_col)
    return result


@triton.jit
def _classify(SCAN: tl.constexpr, qr0, qr1, qc0, qc1, kr0, kr1, kc0, kc1, w):
    """classify_tiles() of scan_tiles.h on two rectangles (inclusive bounds): MASKED, PARTIAL or VISIBLE."""
    if SCAN == 0:
        masked = qr0 < 0
        visible = qr0 >= 0
    elif SCAN == 1:
        masked = kr0 * w + kc0 > qr1 * w + qc1
        visible = kr1 * w + kc1 <= qr0 * w + qc0
    elif SCAN == 2:
        masked = (kr0 > qr1) | (kc0 > qc1)
        visible = (kr1 <= qr0) & (kc1 <= qc0)
    elif SCAN == 3:
        far = (kr0 > qr1 + 1) | (kr1 < qr0 - 1) | (kc0 > qc1 + 1) | (kc1 < qc0 - 1)
        masked = ((kr0 > qr1) | (kc0 > qc1)) & far
        visible = (kr1 <= qr0) & (kc1 <= qc0)
    else:
        masked = (kr0 > qr1) & (kc0 > qc1)
        visible = (kr1 <= qr0) | (kc1 <= qc0)
    return 1 + visible.to(tl.int32) - masked.to(tl.int32)


@triton.jit
def _tile(tile, h, w, tiles_w, tile_w, BLOCK: tl.constexpr):
    """Grid coordinates of a tile's positions, which are inside the grid, their token index in the image, the
    tile's bounds, and whether it holds padding. A tile is BLOCK // tile_w rows of tile_w positions (tile_w a power
    of two: a compile-time constant for a batch, one per image when packed)."""
    tile_h = BLOCK // tile_w
    r0 = (tile // tiles_w) * tile_h
    c0 = (tile % tiles_w) * tile_w
    offs = tl.arange(0, BLOCK)
    row = r0 + offs // tile_w
    col = c0 + offs % tile_w
    ok = (row < h) & (col < w)
    r1 = tl.minimum(r0 + tile_h, h) - 1
    c1 = tl.minimum(c0 + tile_w, w) - 1
    padded = (r1 - r0 + 1 < tile_h) | (c1 - c0 + 1 < tile_w)
    return row, col, ok, row * w + col, r0, r1, c0, c1, padded


@triton.jit
def _image(h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W: tl.constexpr,
           NUM_TILES: tl.constexpr, TILE_W: tl.constexpr, BLOCK: tl.constexpr, PACKED: tl.constexpr,
           SEARCH_STEPS: tl.constexpr):
    """The image of this program's own tile: its (h, w), first token, tiles per row, tile count, tile width, the
    tile's index in it, and whether there is one (a packed launch covers a shape-only bound of the tiles)."""
    if PACKED:
        slot = tl.program_id(0)
        image = segment_of(TILE_OFFSETS, n_images, slot, SEARCH_STEPS)
        real = image < n_images
        image = tl.minimum(image, n_images - 1)
        h = tl.load(GRIDS + 2 * image)
        w = tl.load(GRIDS + 2 * image + 1)
        tile_w = tl.load(TILE_WIDTHS + image)
        tiles_w = (w + tile_w - 1) // tile_w
        num_tiles = tl.where(real, (h + BLOCK // tile_w - 1) // (BLOCK // tile_w) * tiles_w, 0)
        result = (h, w, tl.load(TOKEN_OFFSETS + image), tiles_w, num_tiles, tile_w,
                  slot - tl.load(TILE_OFFSETS + image), real)
    else:
        result = h, w, 0, TILES_W, NUM_TILES, TILE_W, tl.program_id(0), True
    return result


@triton.jit
def _own_tile(h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W: tl.constexpr,
              NUM_TILES: tl.constexpr, TILE_W: tl.constexpr, BLOCK: tl.constexpr, PACKED: tl.constexpr,
              SEARCH_STEPS: tl.constexpr):
    """This program's image (as _image) and its own tile (as _tile, token indices in the sequence; none of it
    inside the grid when the program has no tile)."""
    h, w, token0, tiles_w, num_tiles, tile_w, tile, real = _image(
        h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W, NUM_TILES, TILE_W, BLOCK, PACKED,
        SEARCH_STEPS)
    row, col, ok, tok, r0, r1, c0, c1, padded = _tile(tile, h, w, tiles_w, tile_w, BLOCK)
    if PACKED:
        ok = ok & real
    return h, w, token0, tiles_w, num_tiles, tile_w, row, col, ok, token0 + tok, r0, r1, c0, c1, padded


@triton.jit
def _head(N, H, D: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch*head index, the offset of its (b, 0, head, 0) element, and the head-dim lanes."""
    bh = tl.program_id(1)
    base = (bh // H).to(tl.int64) * N * H * D + (bh % H) * D
    d = tl.arange(0, BLOCK_D)
    return bh, base, d, d < D


@triton.jit
def _rows(base, tok, ok, d, d_ok, H, D: tl.constexpr):
    """Offsets and mask of a tile's (token, head-dim) elements in a contiguous (B, N, H, D) tensor."""
    return base + tok.to(tl.int64)[:, None] * (H * D) + d[None, :], ok[:, None] & d_ok[None, :]


@triton.jit
def _forward_step(k_tile, q, q_row, q_col, qr0, qr1, qc0, qc1, m_i, l_i, acc, K, V, base, d, d_ok, qk_scale, h, w,
                  token0, tiles_w, tile_w, H, D: tl.constexpr, SCAN: tl.constexpr, BLOCK: tl.constexpr,
                  PRECISION: tl.constexpr):
    """One key tile of the forward's online softmax for a query tile: (m_i, l_i, acc) updated."""
    k_row, k_col, k_ok, k_tok, kr0, kr1, kc0, kc1, k_padded = _tile(k_tile, h, w, tiles_w, tile_w, BLOCK)
    visibility = _classify(SCAN, qr0, qr1, qc0, qc1, kr0, kr1, kc0, kc1, w)
    if visibility != MASKED:
        kv_ptrs, kv_mask = _rows(base, token0 + k_tok, k_ok, d, d_ok, H, D)
        k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if (visibility == PARTIAL) | k_padded:
            keep = _visible(SCAN, q_row[:, None], q_col[:, None], k_row[None, :], k_col[None, :], w)
            s = tl.where(keep & k_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no visible key yet
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def forward_kernel(Q, K, V, O, LSE, qk_scale, h, w, N, H, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images,
                   D: tl.constexpr, SCAN: tl.constexpr, TILES_W: tl.constexpr, NUM_TILES: tl.constexpr,
                   TILE_W: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
                   PACKED: tl.constexpr, WHILE_LOOP: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    bh, base, d, d_ok = _head(N, H, D, BLOCK_D)
    h, w, token0, tiles_w, num_tiles, tile_w, q_row, q_col, q_ok, q_tok, qr0, qr1, qc0, qc1, _ = _own_tile(
        h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W, NUM_TILES, TILE_W, BLOCK, PACKED,
        SEARCH_STEPS)
    q_ptrs, q_mask = _rows(base, q_tok, q_ok, d, d_ok, H, D)
    q = tl.load(Q + q_ptrs, mask=q_mask, other=0.0)

    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    if WHILE_LOOP:  # see the module docstring
        k_tile = 0
        while k_tile < num_tiles:
            m_i, l_i, acc = _forward_step(k_tile, q, q_row, q_col, qr0, qr1, qc0, qc1, m_i, l_i, acc, K, V, base, d,
                                          d_ok, qk_scale, h, w, token0, tiles_w, tile_w, H, D, SCAN, BLOCK, PRECISION)
            k_tile += 1
    else:
        for k_tile in range(0, num_tiles):
            m_i, l_i, acc = _forward_step(k_tile, q, q_row, q_col, qr0, qr1, qc0, qc1, m_i, l_i, acc, K, V, base, d,
                                          d_ok, qk_scale, h, w, token0, tiles_w, tile_w, H, D, SCAN, BLOCK, PRECISION)
    l_safe = tl.where(q_ok, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(O + q_ptrs, out.to(O.dtype.element_ty), mask=q_mask)
    lse = (m_i + tl.math.log2(l_safe)) * LN2
    tl.store(LSE + bh.to(tl.int64) * N + q_tok, lse, mask=q_ok)


@triton.jit
def _dkdv_step(q_tile, k, v, k_row, k_col, k_ok, kr0, kr1, kc0, kc1, k_padded, dk, dv, Q, DO, LSE, DELTA, bh, base, d,
               d_ok, qk_scale, h, w, token0, tiles_w, tile_w, N, H, D: tl.constexpr, SCAN: tl.constexpr,
               BLOCK: tl.constexpr, PRECISION: tl.constexpr):
    """One query tile's share of a key tile's dK and dV: (dk, dv) updated."""
    q_row, q_col, q_ok, q_tok, qr0, qr1, qc0, qc1, q_padded = _tile(q_tile, h, w, tiles_w, tile_w, BLOCK)
    visibility = _classify(SCAN, qr0, qr1, qc0, qc1, kr0, kr1, kc0, kc1, w)
    if visibility != MASKED:
        q_ptrs, q_mask = _rows(base, token0 + q_tok, q_ok, d, d_ok, H, D)
        q = tl.load(Q + q_ptrs, mask=q_mask, other=0.0)
        do = tl.load(DO + q_ptrs, mask=q_mask, other=0.0)
        rows = bh.to(tl.int64) * N + token0 + q_tok  # of the (B, H, N) lse and delta
        lse2 = tl.load(LSE + rows, mask=q_ok, other=0.0) * (1.0 / LN2)
        delta = tl.load(DELTA + rows, mask=q_ok, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        if (visibility == PARTIAL) | q_padded | k_padded:
            keep = _visible(SCAN, q_row[None, :], q_col[None, :], k_row[:, None], k_col[:, None], w)
            st = tl.where(keep & q_ok[None, :] & k_ok[:, None], st, float("-inf"))
        pt = tl.math.exp2(st - lse2[None, :])
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def backward_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, softmax_scale, qk_scale, h, w, N, H, GRIDS, TOKEN_OFFSETS,
                         TILE_OFFSETS, TILE_WIDTHS, n_images, D: tl.constexpr, SCAN: tl.constexpr,
                         TILES_W: tl.constexpr, NUM_TILES: tl.constexpr, TILE_W: tl.constexpr, BLOCK: tl.constexpr,
                         BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr,
                         WHILE_LOOP: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    """dK and dV of one key tile, over every query tile that sees it (scores computed transposed: keys x queries)."""
    bh, base, d, d_ok = _head(N, H, D, BLOCK_D)
    h, w, token0, tiles_w, num_tiles, tile_w, k_row, k_col, k_ok, k_tok, kr0, kr1, kc0, kc1, k_padded = _own_tile(
        h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W, NUM_TILES, TILE_W, BLOCK, PACKED,
        SEARCH_STEPS)
    kv_ptrs, kv_mask = _rows(base, k_tok, k_ok, d, d_ok, H, D)
    k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)
    v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    if WHILE_LOOP:  # see the module docstring
        q_tile = 0
        while q_tile < num_tiles:
            dk, dv = _dkdv_step(q_tile, k, v, k_row, k_col, k_ok, kr0, kr1, kc0, kc1, k_padded, dk, dv, Q, DO, LSE,
                                DELTA, bh, base, d, d_ok, qk_scale, h, w, token0, tiles_w, tile_w, N, H, D, SCAN,
                                BLOCK, PRECISION)
            q_tile += 1
    else:
        for q_tile in range(0, num_tiles):
            dk, dv = _dkdv_step(q_tile, k, v, k_row, k_col, k_ok, kr0, kr1, kc0, kc1, k_padded, dk, dv, Q, DO, LSE,
                                DELTA, bh, base, d, d_ok, qk_scale, h, w, token0, tiles_w, tile_w, N, H, D, SCAN,
                                BLOCK, PRECISION)
    tl.store(DK + kv_ptrs, (dk * softmax_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_step(k_tile, q, do, lse2, delta, q_row, q_col, q_ok, qr0, qr1, qc0, qc1, q_padded, dq, K, V, base, d, d_ok,
             qk_scale, h, w, token0, tiles_w, tile_w, H, D: tl.constexpr, SCAN: tl.constexpr, BLOCK: tl.constexpr,
             PRECISION: tl.constexpr):
    """One key tile's share of a query tile's dQ: dq updated."""
    k_row, k_col, k_ok, k_tok, kr0, kr1, kc0, kc1, k_padded = _tile(k_tile, h, w, tiles_w, tile_w, BLOCK)
    visibility = _classify(SCAN, qr0, qr1, qc0, qc1, kr0, kr1, kc0, kc1, w)
    if visibility != MASKED:
        kv_ptrs, kv_mask = _rows(base, token0 + k_tok, k_ok, d, d_ok, H, D)
        k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if (visibility == PARTIAL) | q_padded | k_padded:
            keep = _visible(SCAN, q_row[:, None], q_col[:, None], k_row[None, :], k_col[None, :], w)
            s = tl.where(keep & q_ok[:, None] & k_ok[None, :], s, float("-inf"))
        p = tl.math.exp2(s - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit
def backward_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, softmax_scale, qk_scale, h, w, N, H, GRIDS, TOKEN_OFFSETS,
                       TILE_OFFSETS, TILE_WIDTHS, n_images, D: tl.constexpr, SCAN: tl.constexpr,
                       TILES_W: tl.constexpr, NUM_TILES: tl.constexpr, TILE_W: tl.constexpr, BLOCK: tl.constexpr,
                       BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr,
                       WHILE_LOOP: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    """dQ of one query tile, over every key tile it sees."""
    bh, base, d, d_ok = _head(N, H, D, BLOCK_D)
    h, w, token0, tiles_w, num_tiles, tile_w, q_row, q_col, q_ok, q_tok, qr0, qr1, qc0, qc1, q_padded = _own_tile(
        h, w, GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images, TILES_W, NUM_TILES, TILE_W, BLOCK, PACKED,
        SEARCH_STEPS)
    q_ptrs, q_mask = _rows(base, q_tok, q_ok, d, d_ok, H, D)
    q = tl.load(Q + q_ptrs, mask=q_mask, other=0.0)
    do = tl.load(DO + q_ptrs, mask=q_mask, other=0.0)
    lse2 = tl.load(LSE + bh.to(tl.int64) * N + q_tok, mask=q_ok, other=0.0) * (1.0 / LN2)
    delta = tl.load(DELTA + bh.to(tl.int64) * N + q_tok, mask=q_ok, other=0.0)
    dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    if WHILE_LOOP:  # see the module docstring
        k_tile = 0
        while k_tile < num_tiles:
            dq = _dq_step(k_tile, q, do, lse2, delta, q_row, q_col, q_ok, qr0, qr1, qc0, qc1, q_padded, dq, K, V, base,
                          d, d_ok, qk_scale, h, w, token0, tiles_w, tile_w, H, D, SCAN, BLOCK, PRECISION)
            k_tile += 1
    else:
        for k_tile in range(0, num_tiles):
            dq = _dq_step(k_tile, q, do, lse2, delta, q_row, q_col, q_ok, qr0, qr1, qc0, qc1, q_padded, dq, K, V, base,
                          d, d_ok, qk_scale, h, w, token0, tiles_w, tile_w, H, D, SCAN, BLOCK, PRECISION)
    tl.store(DQ + q_ptrs, (dq * softmax_scale).to(DQ.dtype.element_ty), mask=q_mask)
