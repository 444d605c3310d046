"""Triton kernels of dwconv_modulate; imported only by ``ledit.ops.dwconv_modulate_triton`` when triton is installed.

Same math as csrc/dwconv_modulate/dwconv_modulate.h. Tokens are (B, N, C) contiguous rows in raster order on an
(H, W) grid; a tile is BLOCK_W consecutive tokens of one grid row by BLOCK_C channels, and tap (i, j) of the
output at (r, c) reads y at (r + (i - K//2) * DIL, c + (j - K//2) * DIL), zero outside the grid.

The k*k taps are loops (``range(K * K)``), not unrolled (``tl.static_range``): unrolled, the compiler keeps many
taps' tiles live at once, and at k = 7 the forward spilled about 4.8 KB per thread in 16-bit and the backward
0.3-11 KB at every k (scripts/check_triton_compile.py); each iteration still moves a whole BLOCK_W x BLOCK_C tile.

A packed sequence (csrc/common/packed_images.h) runs the same tile code: its programs own flat runs of one image's
tokens in raster order (rows and columns per token, so a run may wrap onto the next row), found by binary search on
the images' unit offsets; a launch covers a shape-only bound and programs past the last unit own no token. Taps
stay inside their image's grid, and modulation reads the image's row of shift/scale/gate.

Row conditions are broadcast to the tile's columns (``row + tl.zeros_like(cols)``) before they meet a column mask:
Triton 3.9's interpreter turns ``tensor_mask & scalar_bool`` into an int32 tensor and refuses it as a load mask
("mask has unsupported dtype"); the GPU compiler accepts both forms.
"""

import triton
import triton.language as tl

from ledit.ops.packing_triton_kernels import segment_of


@triton.jit
def ln_stats_kernel(x_ptr, mean_ptr, rstd_ptr, n_tokens, eps, C: tl.constexpr, BLOCK_T: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """Per-token LayerNorm mean and 1/std (two passes over the token block's channels, from cache)."""
    tokens = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    token_ok = tokens < n_tokens
    total = tl.zeros([BLOCK_T], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        mask = token_ok[:, None] & (ch < C)[None, :]
        total += tl.sum(tl.load(x_ptr + tokens[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32), 1)
    mean = total / C
    squares = tl.zeros([BLOCK_T], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        mask = token_ok[:, None] & (ch < C)[None, :]
        xv = tl.load(x_ptr + tokens[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        centred = tl.where(mask, xv - mean[:, None], 0.0)
        squares += tl.sum(centred * centred, 1)
    tl.store(mean_ptr + tokens, mean, mask=token_ok)
    tl.store(rstd_ptr + tokens, 1.0 / tl.sqrt(squares / C + eps), mask=token_ok)


@triton.jit
def _normalized(x_ptr, mean_ptr, rstd_ptr, tokens, mask, token_ok, ch, C, NORM: tl.constexpr):
    """u = LN(x) (or x) on a tile of tokens x channels, zero where masked."""
    u = tl.load(x_ptr + tokens[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
    if NORM:
        mean = tl.load(mean_ptr + tokens, mask=token_ok, other=0.0)
        rstd = tl.load(rstd_ptr + tokens, mask=token_ok, other=0.0)
        u = (u - mean[:, None]) * rstd[:, None]
    return tl.where(mask, u, 0.0)


@triton.jit
def _tap_tokens(first, row, cols, di, dj, H, W):
    """Token indices of the tile (row, cols) of the image whose token 0 is `first`, shifted by (di, dj), and which
    of them lie inside the image's grid. `row` is one row or, in a packed run, a row per column."""
    src_row = row + di + tl.zeros_like(cols)  # a tensor: see the module docstring
    src_cols = cols + dj
    ok = (src_row >= 0) & (src_row < H) & (src_cols >= 0) & (src_cols < W)
    return (first + src_row * W + src_cols).to(tl.int64), ok


@triton.jit
def _modulated_tap(x_ptr, mean_ptr, rstd_ptr, first, row, cols, di, dj, ch, channel_ok, scale1p, shift, H, W, C,
                   NORM: tl.constexpr):
    """y = u * (1 + scale) + shift at the tile shifted by (di, dj); zero outside the grid (the conv's padding)."""
    tokens, token_ok = _tap_tokens(first, row, cols, di, dj, H, W)
    mask = token_ok[:, None] & channel_ok[None, :]
    u = _normalized(x_ptr, mean_ptr, rstd_ptr, tokens, mask, token_ok, ch, C, NORM)
    return tl.where(mask, u * scale1p[None, :] + shift[None, :], 0.0)


@triton.jit
def _transposed_taps(g_ptr, w_ptr, first, row, cols, ch, channel_ok, H, W, C, K: tl.constexpr, DIL: tl.constexpr,
                     BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """e = sum_t w_t * g[n - offset(t)] on a tile: the conv's backward with respect to its input."""
    e = tl.zeros([BLOCK_W, BLOCK_C], tl.float32)
    for tap in range(K * K):  # a loop, not unrolled: see the module docstring
        i = tap // K
        j = tap % K
        tokens, token_ok = _tap_tokens(first, row, cols, (K // 2 - i) * DIL, (K // 2 - j) * DIL, H, W)
        mask = token_ok[:, None] & channel_ok[None, :]
        g = tl.load(g_ptr + tokens[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        e += g * tl.load(w_ptr + tap * C + ch, mask=channel_ok, other=0.0)[None, :]
    return e


@triton.jit
def _forward_tile(x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, shift_ptr, scale_ptr, gate_ptr, residual_ptr, out_ptr,
                  sample, first, row, cols, token_ok, ch, H, W, C: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr,
                  NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                  BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = residual + gate * (sum_t w_t * y[n + offset(t)] + bias) on the tile (row, cols) x ch of the image whose
    token 0 is `first` and whose modulation row is `sample`; only tokens with token_ok are written."""
    channel_ok = ch < C
    shift = tl.load(shift_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
    scale1p = 1.0 + tl.load(scale_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_W, BLOCK_C], tl.float32)
    for tap in range(K * K):  # a loop, not unrolled: see the module docstring
        y = _modulated_tap(x_ptr, mean_ptr, rstd_ptr, first, row, cols, (tap // K - K // 2) * DIL,
                           (tap % K - K // 2) * DIL, ch, channel_ok, scale1p, shift, H, W, C, NORM)
        acc += y * tl.load(w_ptr + tap * C + ch, mask=channel_ok, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + ch, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_GATE:
        acc *= tl.load(gate_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    tokens = (first + row * W + cols).to(tl.int64)
    offsets = tokens[:, None] * C + ch[None, :]
    mask = token_ok[:, None] & channel_ok[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def forward_kernel(x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, shift_ptr, scale_ptr, gate_ptr, residual_ptr, out_ptr,
                   H, W, C: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr, NORM: tl.constexpr,
                   HAS_BIAS: tl.constexpr,
                   HAS_GATE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_W: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """One tile of the forward; grid (B*H, W tiles, C tiles)."""
    b = tl.program_id(0) // H
    row = tl.program_id(0) % H
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ch = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    _forward_tile(x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, shift_ptr, scale_ptr, gate_ptr, residual_ptr, out_ptr,
                  b, b * H * W, row, cols, cols < W, ch, H, W, C, K, DIL, NORM, HAS_BIAS, HAS_GATE, HAS_RESIDUAL,
                  BLOCK_W, BLOCK_C)


@triton.jit
def _packed_image(GRIDS, TOKEN_OFFSETS, UNIT_OFFSETS, n_images, unit, SEARCH_STEPS: tl.constexpr):
    """The image of a packed program's `unit` (units laid end to end, image by image): its index, h, w and first
    token, the unit's index in it, and whether there is one (the launch covers a shape-only bound)."""
    image = segment_of(UNIT_OFFSETS, n_images, unit, SEARCH_STEPS)
    real = image < n_images
    image = tl.minimum(image, n_images - 1)
    return (image, tl.load(GRIDS + 2 * image), tl.load(GRIDS + 2 * image + 1), tl.load(TOKEN_OFFSETS + image),
            unit - tl.load(UNIT_OFFSETS + image), real)


@triton.jit
def _packed_run(run, h, w, real, BLOCK_W: tl.constexpr):
    """Run `run` of BLOCK_W consecutive tokens of an h x w image: each token's row and column, and which exist."""
    t = run * BLOCK_W + tl.arange(0, BLOCK_W)
    return t // w, t % w, (t < h * w) & real


@triton.jit
def packed_forward_kernel(x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, shift_ptr, scale_ptr, gate_ptr, residual_ptr,
                          out_ptr, GRIDS, TOKEN_OFFSETS, UNIT_OFFSETS, n_images, C: tl.constexpr, K: tl.constexpr,
                          DIL: tl.constexpr, NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr,
                          HAS_RESIDUAL: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                          SEARCH_STEPS: tl.constexpr):
    """One run of BLOCK_W tokens of one image of a packed sequence; grid (a bound on the runs, C tiles)."""
    image, h, w, first, run, real = _packed_image(GRIDS, TOKEN_OFFSETS, UNIT_OFFSETS, n_images, tl.program_id(0),
                                                  SEARCH_STEPS)
    row, cols, token_ok = _packed_run(run, h, w, real, BLOCK_W)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    _forward_tile(x_ptr, mean_ptr, rstd_ptr, w_ptr, bias_ptr, shift_ptr, scale_ptr, gate_ptr, residual_ptr, out_ptr,
                  image, first, row, cols, token_ok, ch, h, w, C, K, DIL, NORM, HAS_BIAS, HAS_GATE, HAS_RESIDUAL,
                  BLOCK_W, BLOCK_C)


@triton.jit
def _backward_run(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, shift_ptr, scale_ptr, gate_ptr, dx_ptr, partial, sample,
                  first, row, cols, token_ok, H, W, C: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr,
                  NORM: tl.constexpr, HAS_GATE: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx of the tokens (row, cols) with token_ok, all channels, of the image whose token 0 is `first` and whose
    modulation row is `sample`; their token sums are added to the (K*K + 3, C) slice `partial`.

    LN's backward needs channel means of du per token, so a run is visited twice: channel blocks first accumulate
    those means and the sums, then recompute du and write dx."""
    tokens = (first + row * W + cols).to(tl.int64)
    sum_du = tl.zeros([BLOCK_W], tl.float32)
    sum_du_u = tl.zeros([BLOCK_W], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        channel_ok = ch < C
        mask = token_ok[:, None] & channel_ok[None, :]
        shift = tl.load(shift_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
        scale1p = 1.0 + tl.load(scale_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
        gate_scale1p = scale1p
        if HAS_GATE:
            gate_scale1p *= tl.load(gate_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + tokens[:, None] * C + ch[None, :], mask=mask, other=0.0).to(tl.float32)
        e = _transposed_taps(g_ptr, w_ptr, first, row, cols, ch, channel_ok, H, W, C, K, DIL, BLOCK_W, BLOCK_C)
        e = tl.where(mask, e, 0.0)  # a masked token's taps may still reach into the grid
        u = _normalized(x_ptr, mean_ptr, rstd_ptr, tokens, mask, token_ok, ch, C, NORM)
        du = e * gate_scale1p[None, :]
        sum_du += tl.sum(du, 1)
        sum_du_u += tl.sum(du * u, 1)
        for tap in range(K * K):
            y = _modulated_tap(x_ptr, mean_ptr, rstd_ptr, first, row, cols, (tap // K - K // 2) * DIL,
                               (tap % K - K // 2) * DIL, ch, channel_ok, scale1p, shift, H, W, C, NORM)
            tap_ptr = partial + tap * C + ch
            tl.store(tap_ptr, tl.load(tap_ptr, mask=channel_ok) + tl.sum(g * y, 0), mask=channel_ok)
        sums_ptr = partial + K * K * C + ch
        tl.store(sums_ptr, tl.load(sums_ptr, mask=channel_ok) + tl.sum(g, 0), mask=channel_ok)
        tl.store(sums_ptr + C, tl.load(sums_ptr + C, mask=channel_ok) + tl.sum(e, 0), mask=channel_ok)
        tl.store(sums_ptr + 2 * C, tl.load(sums_ptr + 2 * C, mask=channel_ok) + tl.sum(e * u, 0),
                 mask=channel_ok)
    mean_du = sum_du / C
    mean_du_u = sum_du_u / C
    if NORM:
        rstd = tl.load(rstd_ptr + tokens, mask=token_ok, other=0.0)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        channel_ok = ch < C
        mask = token_ok[:, None] & channel_ok[None, :]
        gate_scale1p = 1.0 + tl.load(scale_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
        if HAS_GATE:
            gate_scale1p *= tl.load(gate_ptr + sample * C + ch, mask=channel_ok, other=0.0).to(tl.float32)
        e = _transposed_taps(g_ptr, w_ptr, first, row, cols, ch, channel_ok, H, W, C, K, DIL, BLOCK_W, BLOCK_C)
        dx = e * gate_scale1p[None, :]
        if NORM:
            u = _normalized(x_ptr, mean_ptr, rstd_ptr, tokens, mask, token_ok, ch, C, NORM)
            dx = rstd[:, None] * (dx - mean_du[:, None] - u * mean_du_u[:, None])
        tl.store(dx_ptr + tokens[:, None] * C + ch[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def backward_kernel(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, shift_ptr, scale_ptr, gate_ptr, dx_ptr, partial_ptr,
                    H, W, n_row_blocks, n_col_blocks, C: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr,
                    NORM: tl.constexpr,
                    HAS_GATE: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx for ROWS grid rows x BLOCK_W columns, all channels, and this program's share of the token sums.

    Grid (B * row blocks, column blocks). Each program owns one (K*K + 3, C) slice of the zero-initialised
    partial buffer (rows as in dwconv_modulate.h: per-tap sum g * y[n + offset], sum g, sum e, sum e * u)."""
    b = tl.program_id(0) // n_row_blocks
    row_block = tl.program_id(0) % n_row_blocks
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    partial = partial_ptr + (tl.program_id(0) * n_col_blocks + tl.program_id(1)).to(tl.int64) * (K * K + 3) * C
    for block_row in range(ROWS):
        row = row_block * ROWS + block_row
        token_ok = (cols < W) & (row + tl.zeros_like(cols) < H)  # rows past the grid's end are masked out whole
        _backward_run(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, shift_ptr, scale_ptr, gate_ptr, dx_ptr, partial, b,
                      b * H * W, row, cols, token_ok, H, W, C, K, DIL, NORM, HAS_GATE, BLOCK_W, BLOCK_C)


@triton.jit
def packed_backward_kernel(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, shift_ptr, scale_ptr, gate_ptr, dx_ptr,
                           partial_ptr, GRIDS, TOKEN_OFFSETS, UNIT_OFFSETS, n_images, C: tl.constexpr,
                           K: tl.constexpr, DIL: tl.constexpr, NORM: tl.constexpr, HAS_GATE: tl.constexpr,
                           ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                           SEARCH_STEPS: tl.constexpr):
    """dx for ROWS runs of BLOCK_W tokens of one image of a packed sequence, and the runs' token sums in this
    program's (K*K + 3, C) slice of the partial buffer (summed per image by the launcher); grid (a bound on the
    units)."""
    image, h, w, first, unit, real = _packed_image(GRIDS, TOKEN_OFFSETS, UNIT_OFFSETS, n_images, tl.program_id(0),
                                                   SEARCH_STEPS)
    partial = partial_ptr + tl.program_id(0).to(tl.int64) * (K * K + 3) * C
    for sub in range(ROWS):
        row, cols, token_ok = _packed_run(unit * ROWS + sub, h, w, real, BLOCK_W)
        _backward_run(g_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, shift_ptr, scale_ptr, gate_ptr, dx_ptr, partial,
                      image, first, row, cols, token_ok, h, w, C, K, DIL, NORM, HAS_GATE, BLOCK_W, BLOCK_C)
