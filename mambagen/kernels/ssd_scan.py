"""Triton: the chunked SSD scan of Mamba2 for training and prefill, forward and backward.

The reference is `layers.ssd_ref.ssd_chunked` (the SSD paper's four steps). Per batch row, head h
(group g) and chunk of Q steps, with a = dt * A, `acum` its cumulative sum inside the chunk,
X_s = dt_s x_s, and S_in the state entering the chunk (p x n):

    y_l   = sum_{s <= l} (C_l . B_s) exp(acum_l - acum_s) X_s  +  exp(acum_l) S_in C_l       (y kernel)
    S_out = exp(acum_end) S_in  +  sum_s exp(acum_end - acum_s) X_s B_s^T                    (state kernels)

The forward is three launches: each chunk's own state, the carry across chunks (a short loop per
head), then y. Only the scan's inputs and the carried states (b, c + 1, h, p, n) are kept for the
backward pass, which runs four: the gradient entering each chunk from its outputs
(G = sum_l exp(acum_l) dy_l C_l^T), the carry backwards (dS_out), then two kernels that visit each
chunk's (Q x Q) tiles once more, in the two orders:

    dX_s = sum_{l >= s} (B_s . C_l) exp(acum_l - acum_s) dy_l + exp(acum_end - acum_s) dS_out B_s
    dB_s = sum_{l >= s} (X_s . dy_l) exp(acum_l - acum_s) C_l + exp(acum_end - acum_s) dS_out^T X_s
    dC_l = sum_{s <= l} (dy_l . X_s) exp(acum_l - acum_s) B_s + exp(acum_l) S_in^T dy_l

and the gradient of the log-decays falls out of the same tiles: d acum_l = C_l . dC_l - B_l . dB_l
(per head), plus <dS_out, S_out> at the chunk's last step; a reverse cumulative sum gives d a.

C_l . B_s, the same for every head of a group, is one batched matmul per chunk and group beside the kernels
(`_chunk_scores`), read by the y and dx/dB kernels instead of recomputed per head.

The matmul operands go to tensor cores in the input dtype (bf16 under autocast), as in mamba_ssm;
decays, accumulators, the carry and y are float32, and the carried states are stored in the operand dtype
(`_states_dtype`), the final state in float32. Float32 inputs use exact float32 products.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

BLOCK_STATE = 64  # rows of the chunk-state loop
# The tiles of rows the tuner tries (the interpreter takes the first). 16 rows in the backward kernels: at
# AiM-L's shape the only dx/dB setting that does not spill (8 warps; bench/results/offline_sm90_scan_registers)
Y_ROWS, BACKWARD_ROWS = (64, 32), (32, 64, 16)
MAX_PARTIALS = 8  # the heads of a group are split over this many programs; their dB / dC partials are summed


def _tuned(rows: tuple[int, ...], key: list[str]):
    """Tiles of BLOCK rows; on a GPU the rows and the warps per program are tuned once per `key` (every
    setting compiles, so a longer list costs seconds per new shape); the first rows and 4 warps in the interpreter."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        rows, warps = rows[:1], (4,)
    else:
        warps = (4, 8)
    configs = [triton.Config({"BLOCK": r}, num_warps=w, num_stages=2) for r in rows for w in warps]
    return triton.autotune(configs=configs, key=key)


@triton.jit
def _dot(a, b, MM: tl.constexpr):
    """a @ b accumulated in float32; MM 1: bf16 operands, 2: fp16, 0: exact float32."""
    if MM == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif MM == 2:
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _rows(ptr, t, width, col0, cols, mt, mc):
    """The tile [t, col0 + cols] of a layout of rows `width` apart (steps of every batch row in sequence):
    x and dy rows hold h*p values, B and C rows g*n, and a row may be a slice of a wider one (x, B and C
    are views of the conv output's rows); zeros outside the masks."""
    return tl.load(ptr + t[:, None] * width + col0 + cols[None, :], mask=mt[:, None] & mc[None, :], other=0.0)


@triton.jit
def _source_tile(x_ptr, SX, dt_ptr, acum_base, t0, s0, h, Q: tl.constexpr, H: tl.constexpr, P: tl.constexpr,
                 BLOCK: tl.constexpr, offs_p, mp):
    """Steps s0 .. s0 + BLOCK of a chunk as the source side s of a causal tile: their offsets and mask,
    log-decays and X = dt x (BLOCK, P) in float32."""
    offs_s = s0 + tl.arange(0, BLOCK)
    ms = offs_s < Q
    acum_s = tl.load(acum_base + offs_s, mask=ms, other=0.0)
    dt_s = tl.load(dt_ptr + (t0 + offs_s) * H + h, mask=ms, other=0.0)
    Xs = _rows(x_ptr, t0 + offs_s, SX, h * P, offs_p, ms, mp).to(tl.float32) * dt_s[:, None]
    return offs_s, ms, acum_s, Xs


@triton.jit
def _scores(cb_ptr, bc, g, G: tl.constexpr, Q: tl.constexpr, offs_l, offs_s, ml, ms, LS: tl.constexpr):
    """The tile of C_l . B_s (precomputed per chunk and group: every head of the group shares it);
    LS: as (l, s), else transposed as (s, l)."""
    base = cb_ptr + (bc.to(tl.int64) * G + g) * Q * Q
    if LS:
        return tl.load(base + offs_l[:, None] * Q + offs_s[None, :], mask=ml[:, None] & ms[None, :], other=0.0)
    return tl.load(base + offs_l[None, :] * Q + offs_s[:, None], mask=ms[:, None] & ml[None, :], other=0.0)


@triton.jit
def _backward_program(L, NC, Q: tl.constexpr, H: tl.constexpr, G: tl.constexpr, P: tl.constexpr, N: tl.constexpr,
                      HEADS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """Where a backward program works. Axes: (batch row * chunk, group * splits + split, tile of rows).
    Returns b, c, the group g, its first head h0 (it visits HEADS heads), the chunk's first step t0, the
    tile's rows and the column offsets, with their masks."""
    bc, gk, tile = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    R: tl.constexpr = H // G
    g = gk // (R // HEADS)
    b, c = bc // NC, bc % NC
    rows, offs_p, offs_n = tile * BLOCK + tl.arange(0, BLOCK), tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    return (b, c, g, g * R + (gk % (R // HEADS)) * HEADS, b.to(tl.int64) * L + c * Q,
            rows, offs_p, offs_n, rows < Q, offs_p < P, offs_n < N)


@triton.jit
def _store_group_partial(ptr, acc, bc, g, offs_rows, m_rows, offs_n, mn, Q: tl.constexpr, H: tl.constexpr,
                         G: tl.constexpr, N: tl.constexpr, HEADS: tl.constexpr):
    """This program's partial of a group's dB or dC (its HEADS heads summed): ptr is (splits, b*nc, Q, G, N),
    the splits summed on the host."""
    k = tl.program_id(1) % ((H // G) // HEADS)
    tl.store(ptr + (((k * tl.num_programs(0) + bc).to(tl.int64) * Q + offs_rows[:, None]) * G + g) * N + offs_n[None, :],
             acc, mask=m_rows[:, None] & mn[None, :])


@triton.jit
def _decay(acum_rows, acum_cols, rows, cols, LOWER: tl.constexpr):
    """exp(acum[l] - acum[s]) where l >= s, else 0 (masked before the exp: nothing overflows).
    LOWER: rows are l, cols are s; otherwise rows are s, cols are l."""
    if LOWER:
        keep = rows[:, None] >= cols[None, :]
        seg = acum_rows[:, None] - acum_cols[None, :]
    else:
        keep = cols[None, :] >= rows[:, None]
        seg = acum_cols[None, :] - acum_rows[:, None]
    return tl.exp(tl.where(keep, seg, float("-inf")))


@triton.jit
def _chunk_state_kernel(u_ptr, SU, dt_ptr, acum_ptr, v_ptr, SV, out_ptr, L, NC,
                        H: tl.constexpr, G: tl.constexpr, P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
                        FORWARD: tl.constexpr, MM: tl.constexpr,
                        BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[b, c, h] (p x n) = sum_l w_l u_l^T v_l over one chunk.
    FORWARD: u = x, v = B, w = dt_l exp(acum_end - acum_l)  (the chunk's own state);
    else:    u = dy, v = C, w = exp(acum_l)                 (the gradient the chunk's outputs send its S_in)."""
    bc, h = tl.program_id(0), tl.program_id(1)
    b, c = bc // NC, bc % NC
    g = h // (H // G)
    t0 = (b.to(tl.int64) * L + c * Q)
    acum_base = acum_ptr + ((b * H + h) * NC + c) * Q
    acum_end = tl.load(acum_base + Q - 1)
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for l0 in range(0, Q, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        ml = offs_l < Q
        acum = tl.load(acum_base + offs_l, mask=ml, other=0.0)
        if FORWARD:
            w = tl.load(dt_ptr + (t0 + offs_l) * H + h, mask=ml, other=0.0) * tl.exp(acum_end - acum)
        else:
            w = tl.exp(acum)
        u = tl.load(u_ptr + (t0 + offs_l[None, :]) * SU + h * P + offs_p[:, None],
                    mask=ml[None, :] & (offs_p[:, None] < P), other=0.0).to(tl.float32)      # (P, L)
        v = tl.load(v_ptr + (t0 + offs_l[:, None]) * SV + g * N + offs_n[None, :],
                    mask=ml[:, None] & (offs_n[None, :] < N), other=0.0)                     # (L, N)
        acc += _dot(u * w[None, :], v, MM)
    out = out_ptr + (bc.to(tl.int64) * H + h) * P * N + offs_p[:, None] * N + offs_n[None, :]
    tl.store(out, acc, mask=(offs_p[:, None] < P) & (offs_n[None, :] < N))


@triton.jit
def _carry_start(ptr, HAS: tl.constexpr, BLOCK: tl.constexpr, PN: tl.constexpr):
    """The carry's starting value for this program's block of one (b, h) state: ptr's, or zeros."""
    bh, offs = tl.program_id(0), tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    if HAS:
        return tl.load(ptr + bh.to(tl.int64) * PN + offs, mask=offs < PN, other=0.0).to(tl.float32)
    return tl.zeros((BLOCK,), dtype=tl.float32)


@triton.jit
def _carry_kernel(own_ptr, acum_ptr, init_ptr, states_ptr, final_ptr, NC, H: tl.constexpr, Q: tl.constexpr,
                  PN: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK: tl.constexpr):
    """states[b, c] = the state entering chunk c, states[b, NC] the final one (in the dtype the matmuls read
    them in), and the final one in float32 too: S_{c+1} = exp(acum_end[c]) S_c + own[c], carried in float32."""
    bh, blk = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < PN
    s = _carry_start(init_ptr, HAS_INIT, BLOCK, PN)
    for c in range(NC):
        tl.store(states_ptr + ((b.to(tl.int64) * (NC + 1) + c) * H + h) * PN + offs,
                 s.to(states_ptr.dtype.element_ty), mask=m)
        decay = tl.exp(tl.load(acum_ptr + (bh * NC + c) * Q + Q - 1))
        s = decay * s + tl.load(own_ptr + ((b.to(tl.int64) * NC + c) * H + h) * PN + offs, mask=m, other=0.0)
    tl.store(states_ptr + ((b.to(tl.int64) * (NC + 1) + NC) * H + h) * PN + offs,
             s.to(states_ptr.dtype.element_ty), mask=m)
    tl.store(final_ptr + bh.to(tl.int64) * PN + offs, s, mask=m)


@triton.jit
def _carry_bwd_kernel(sent_ptr, acum_ptr, states_ptr, dfinal_ptr, dout_ptr, dend_ptr, dinit_ptr, NC,
                      H: tl.constexpr, Q: tl.constexpr, PN: tl.constexpr, HAS_DFINAL: tl.constexpr,
                      BLOCK: tl.constexpr):
    """Backwards over chunks: dS_out[c] = dS_in[c + 1]; dS_in[c] = exp(acum_end[c]) dS_out[c] + sent[c].
    Also d acum_end[c] += <dS_out[c], S_out[c]> (summed over the blocks of a state by atomics)."""
    bh, blk = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < PN
    ds = _carry_start(dfinal_ptr, HAS_DFINAL, BLOCK, PN)
    for k in range(NC):
        c = NC - 1 - k
        tl.store(dout_ptr + ((b.to(tl.int64) * NC + c) * H + h) * PN + offs, ds.to(dout_ptr.dtype.element_ty), mask=m)
        s_out = tl.load(states_ptr + ((b.to(tl.int64) * (NC + 1) + c + 1) * H + h) * PN + offs, mask=m,
                        other=0.0).to(tl.float32)
        tl.atomic_add(dend_ptr + bh * NC + c, tl.sum(ds * s_out, axis=0))
        decay = tl.exp(tl.load(acum_ptr + (bh * NC + c) * Q + Q - 1))
        ds = decay * ds + tl.load(sent_ptr + ((b.to(tl.int64) * NC + c) * H + h) * PN + offs, mask=m, other=0.0)
    tl.store(dinit_ptr + bh.to(tl.int64) * PN + offs, ds, mask=m)


@_tuned(Y_ROWS, key=["H", "G", "P", "N", "Q", "MM"])
@triton.jit
def _y_kernel(x_ptr, SX, dt_ptr, acum_ptr, cb_ptr, C_ptr, SC, states_ptr, y_ptr, L, NC,
              H: tl.constexpr, G: tl.constexpr, P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
              MM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK: tl.constexpr):
    """y for BLOCK steps of one chunk and head: the in-chunk causal part, then the entering state's."""
    bc, h, lb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, c = bc // NC, bc % NC
    g = h // (H // G)
    t0 = (b.to(tl.int64) * L + c * Q)
    acum_base = acum_ptr + ((b * H + h) * NC + c) * Q
    offs_l = lb * BLOCK + tl.arange(0, BLOCK)
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    ml, mp, mn = offs_l < Q, offs_p < P, offs_n < N
    acum_l = tl.load(acum_base + offs_l, mask=ml, other=0.0)
    Cl = _rows(C_ptr, t0 + offs_l, SC, g * N, offs_n, ml, mn)
    acc = tl.zeros((BLOCK, BLOCK_P), dtype=tl.float32)
    for s0 in range(0, (lb + 1) * BLOCK, BLOCK):
        offs_s, ms, acum_s, Xs = _source_tile(x_ptr, SX, dt_ptr, acum_base, t0, s0, h, Q, H, P, BLOCK, offs_p, mp)
        decay = _decay(acum_l, acum_s, offs_l, offs_s, True)                                      # (L, S)
        acc += _dot(_scores(cb_ptr, bc, g, G, Q, offs_l, offs_s, ml, ms, True) * decay, Xs, MM)   # (L, S) @ (S, P)
    S_in = tl.load(states_ptr + (((b.to(tl.int64) * (NC + 1) + c) * H + h) * P + offs_p[None, :]) * N + offs_n[:, None],
                   mask=mp[None, :] & mn[:, None], other=0.0)                                         # (N, P): S_in^T
    acc += _dot(Cl, S_in, MM) * tl.exp(acum_l)[:, None]
    tl.store(y_ptr + ((t0 + offs_l[:, None]) * H + h) * P + offs_p[None, :], acc, mask=ml[:, None] & mp[None, :])


@_tuned(BACKWARD_ROWS, key=["H", "G", "P", "N", "Q", "HEADS", "MM"])
@triton.jit
def _bwd_dx_db_kernel(x_ptr, SX, dt_ptr, acum_ptr, B_ptr, SB, C_ptr, SC, cb_ptr, dy_ptr, SDY, dout_ptr,
                      dx_ptr, ddt_ptr, dB_ptr, rowB_ptr, L, NC,
                      H: tl.constexpr, G: tl.constexpr, P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
                      HEADS: tl.constexpr, MM: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK: tl.constexpr):
    """For BLOCK steps s of one chunk and HEADS heads of a group (anti-causal: every l >= s):
    dx and the x-part of ddt per head, B . dB per head (for d acum), and the heads' dB summed."""
    b, c, g, h0, t0, offs_s, offs_p, offs_n, ms, mp, mn = _backward_program(L, NC, Q, H, G, P, N, HEADS, BLOCK,
                                                                            BLOCK_P, BLOCK_N)
    bc, sb = tl.program_id(0), tl.program_id(2)
    Bs = _rows(B_ptr, t0 + offs_s, SB, g * N, offs_n, ms, mn)
    dB = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
    for j in range(HEADS):
        h = h0 + j
        acum_base = acum_ptr + ((b * H + h) * NC + c) * Q
        acum_s = tl.load(acum_base + offs_s, mask=ms, other=0.0)
        acum_end = tl.load(acum_base + Q - 1)
        dt_s = tl.load(dt_ptr + (t0 + offs_s) * H + h, mask=ms, other=0.0)
        xs = _rows(x_ptr, t0 + offs_s, SX, h * P, offs_p, ms, mp).to(tl.float32)
        Xs = xs * dt_s[:, None]
        dX = tl.zeros((BLOCK, BLOCK_P), dtype=tl.float32)
        dBh = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
        for l0 in range(sb * BLOCK, Q, BLOCK):
            offs_l = l0 + tl.arange(0, BLOCK)
            ml = offs_l < Q
            acum_l = tl.load(acum_base + offs_l, mask=ml, other=0.0)
            Cl = _rows(C_ptr, t0 + offs_l, SC, g * N, offs_n, ml, mn)
            dyl = _rows(dy_ptr, t0 + offs_l, SDY, h * P, offs_p, ml, mp)
            decay = _decay(acum_s, acum_l, offs_s, offs_l, False)                                   # (S, L)
            dX += _dot(_scores(cb_ptr, bc, g, G, Q, offs_l, offs_s, ml, ms, False) * decay, dyl, MM)
            dBh += _dot(_dot(Xs, tl.trans(dyl), MM) * decay, Cl, MM)
        dS = tl.load(dout_ptr + (((bc.to(tl.int64) * H + h) * P + offs_p[:, None]) * N + offs_n[None, :]),
                     mask=mp[:, None] & mn[None, :], other=0.0)                                       # (P, N)
        w = tl.exp(acum_end - acum_s)[:, None]
        dX += _dot(Bs, tl.trans(dS), MM) * w
        dBh += _dot(Xs, dS, MM) * w
        tl.store(dx_ptr + ((t0 + offs_s[:, None]) * H + h) * P + offs_p[None, :],
                 (dX * dt_s[:, None]).to(dx_ptr.dtype.element_ty), mask=ms[:, None] & mp[None, :])
        tl.store(ddt_ptr + (t0 + offs_s) * H + h, tl.sum(dX * xs, axis=1), mask=ms)
        tl.store(rowB_ptr + ((b * H + h) * NC + c) * Q + offs_s, tl.sum(dBh * Bs.to(tl.float32), axis=1), mask=ms)
        dB += dBh
    _store_group_partial(dB_ptr, dB, bc, g, offs_s, ms, offs_n, mn, Q, H, G, N, HEADS)


@_tuned(BACKWARD_ROWS, key=["H", "G", "P", "N", "Q", "HEADS", "MM"])
@triton.jit
def _bwd_dc_kernel(x_ptr, SX, dt_ptr, acum_ptr, B_ptr, SB, C_ptr, SC, dy_ptr, SDY, states_ptr, dC_ptr, rowC_ptr,
                   L, NC,
                   H: tl.constexpr, G: tl.constexpr, P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
                   HEADS: tl.constexpr, MM: tl.constexpr,
                   BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK: tl.constexpr):
    """For BLOCK steps l of one chunk and HEADS heads of a group (causal: every s <= l):
    C . dC per head (for d acum), and the heads' dC summed."""
    b, c, g, h0, t0, offs_l, offs_p, offs_n, ml, mp, mn = _backward_program(L, NC, Q, H, G, P, N, HEADS, BLOCK,
                                                                            BLOCK_P, BLOCK_N)
    bc, lb = tl.program_id(0), tl.program_id(2)
    Cl = _rows(C_ptr, t0 + offs_l, SC, g * N, offs_n, ml, mn)
    dC = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
    for j in range(HEADS):
        h = h0 + j
        acum_base = acum_ptr + ((b * H + h) * NC + c) * Q
        acum_l = tl.load(acum_base + offs_l, mask=ml, other=0.0)
        dyl = _rows(dy_ptr, t0 + offs_l, SDY, h * P, offs_p, ml, mp)
        dCh = tl.zeros((BLOCK, BLOCK_N), dtype=tl.float32)
        for s0 in range(0, (lb + 1) * BLOCK, BLOCK):
            offs_s, ms, acum_s, Xs = _source_tile(x_ptr, SX, dt_ptr, acum_base, t0, s0, h, Q, H, P, BLOCK, offs_p, mp)
            Bs = _rows(B_ptr, t0 + offs_s, SB, g * N, offs_n, ms, mn)
            dCh += _dot(_dot(dyl, tl.trans(Xs), MM) * _decay(acum_l, acum_s, offs_l, offs_s, True), Bs, MM)
        S_in = tl.load(states_ptr + (((b.to(tl.int64) * (NC + 1) + c) * H + h) * P + offs_p[:, None]) * N + offs_n[None, :],
                       mask=mp[:, None] & mn[None, :], other=0.0)                                    # (P, N)
        dCh += _dot(dyl, S_in, MM) * tl.exp(acum_l)[:, None]
        tl.store(rowC_ptr + ((b * H + h) * NC + c) * Q + offs_l, tl.sum(dCh * Cl.to(tl.float32), axis=1), mask=ml)
        dC += dCh
    _store_group_partial(dC_ptr, dC, bc, g, offs_l, ml, offs_n, mn, Q, H, G, N, HEADS)


# ----------------------------------------------------------------------------------------------
# host side: shapes, padding to whole chunks, launches; a custom op so torch.compile keeps it whole

def _mm(dtype: torch.dtype) -> int:
    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)


def _states_dtype(dtype: torch.dtype) -> torch.dtype:
    """The carried states as stored for the kernels that read them: in the matmul operand dtype (the y and
    dC kernels cast them to it anyway, and they are re-read once per tile of rows: half the bytes), as
    mamba_ssm keeps them; float32 for float32 inputs."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def _blocks(Q: int, p: int, n: int):
    """Rows of the chunk-state loop, and the padded head and state widths (tl.dot needs >= 16)."""
    return (min(BLOCK_STATE, max(16, triton.next_power_of_2(Q))),
            max(16, triton.next_power_of_2(p)), max(16, triton.next_power_of_2(n)))


def _row_blocks(Q: int):
    """A launch grid's last axis: the tiles of rows of one chunk, for the tuned BLOCK."""
    return lambda meta: triton.cdiv(Q, meta["BLOCK"])


def _packed_rows(t: torch.Tensor) -> torch.Tensor:
    """t (b, L, k, m) as the kernels read it: each step's k*m values packed in one row, rows evenly apart
    (a row stride of t.stride(1), possibly a slice of a wider row: x, B and C are views of the conv output),
    or a contiguous copy where t is laid out otherwise."""
    b, L, k, m = t.shape
    if t.stride(3) == 1 and t.stride(2) == m and t.stride(1) >= k * m and t.stride(0) == L * t.stride(1):
        return t
    return t.contiguous()


def _prepare(x, dt, A, B, C, chunk_size: int):
    """Pad the length to whole chunks (zero steps leave the state unchanged) and take the in-chunk
    cumulative log-decay acum (b, h, c, Q) in float32. x, B and C keep their rows where they are."""
    b, l, h, p = x.shape
    Q = min(chunk_size, l)
    pad = -l % Q
    if pad:
        x, dt, B, C = (torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    x, B, C = _packed_rows(x), _packed_rows(B), _packed_rows(C)
    dt = dt.float().contiguous()
    nc = x.shape[1] // Q
    acum = (dt * A.float()).view(b, nc, Q, h).cumsum(dim=2).permute(0, 3, 1, 2).contiguous()
    return x, dt, B, C, acum, Q, nc


def _chunk_scores(B, C, Q: int):
    """C_l . B_s for every pair of steps of each chunk and group, float32 (b * nc, g, Q, Q): one small
    batched matmul instead of one per head in the kernels (a group's heads share B and C)."""
    b, L, g, n = B.shape
    Bc, Cc = (t.reshape(b * (L // Q), Q, g, n).transpose(1, 2).float() for t in (B, C))  # (b*nc, g, Q, n)
    return torch.matmul(Cc, Bc.transpose(-1, -2)).contiguous()


def _heads_per_program(r: int) -> int:
    """Heads of a group one backward program visits: r / (the largest divisor of r <= MAX_PARTIALS)."""
    splits = max(d for d in range(1, min(r, MAX_PARTIALS) + 1) if r % d == 0)
    return r // splits


def _forward(x, dt, A, B, C, initial_state, chunk_size):
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    x, dt, B, C, acum, Q, nc = _prepare(x, dt, A, B, C, chunk_size)
    L, mm = x.shape[1], _mm(x.dtype)
    BL, BP, BN = _blocks(Q, p, n)
    shape = dict(H=h, G=g, P=p, N=n, Q=Q, MM=mm, BLOCK_P=BP, BLOCK_N=BN)
    own = torch.empty(b, nc, h, p, n, device=x.device, dtype=torch.float32)
    _chunk_state_kernel[(b * nc, h)](x, x.stride(1), dt, acum, B, B.stride(1), own, L, nc, FORWARD=True, BLOCK_L=BL,
                                     **shape)
    states = torch.empty(b, nc + 1, h, p, n, device=x.device, dtype=_states_dtype(x.dtype))
    final = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32)
    init = initial_state.contiguous() if initial_state is not None else own
    _carry_kernel[(b * h, triton.cdiv(p * n, 1024))](own, acum, init, states, final, nc, H=h, Q=Q, PN=p * n,
                                                    HAS_INIT=initial_state is not None, BLOCK=1024)
    y = torch.empty(b, L, h, p, device=x.device, dtype=torch.float32)
    rows = _row_blocks(Q)
    _y_kernel[lambda meta: (b * nc, h, rows(meta))](x, x.stride(1), dt, acum, _chunk_scores(B, C, Q), C, C.stride(1),
                                                    states, y, L, nc, **shape)
    return y[:, :l].contiguous() if L != l else y, final, states


def _backward(dy, dfinal, x, dt, A, B, C, states, chunk_size):
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    x_dtype, B_dtype = x.dtype, B.dtype
    x, dt, B, C, acum, Q, nc = _prepare(x, dt, A, B, C, chunk_size)
    L, mm = x.shape[1], _mm(x.dtype)
    dy = _packed_rows(torch.nn.functional.pad(dy, (0, 0, 0, 0, 0, L - l)) if L != l else dy)
    dev, f32 = x.device, torch.float32
    BL, BP, BN = _blocks(Q, p, n)
    sent = torch.empty(b, nc, h, p, n, device=dev, dtype=f32)
    _chunk_state_kernel[(b * nc, h)](dy, dy.stride(1), dt, acum, C, C.stride(1), sent, L, nc, H=h, G=g, P=p, N=n, Q=Q,
                                     FORWARD=False, MM=mm, BLOCK_L=BL, BLOCK_P=BP, BLOCK_N=BN)
    dout = torch.empty(sent.shape, device=dev, dtype=states.dtype)   # read only as a matmul operand
    dend = torch.zeros(b, h, nc, device=dev, dtype=f32)
    dinit = torch.empty(b, h, p, n, device=dev, dtype=f32)
    _carry_bwd_kernel[(b * h, triton.cdiv(p * n, 1024))](
        sent, acum, states, dfinal.contiguous() if dfinal is not None else sent, dout, dend, dinit, nc,
        H=h, Q=Q, PN=p * n, HAS_DFINAL=dfinal is not None, BLOCK=1024)

    heads = _heads_per_program(h // g)
    splits = h // g // heads
    shape = dict(H=h, G=g, P=p, N=n, Q=Q, HEADS=heads, MM=mm, BLOCK_P=BP, BLOCK_N=BN)
    rows = _row_blocks(Q)
    grid = lambda meta: (b * nc, g * splits, rows(meta))
    dx = torch.empty(b, L, h, p, device=dev, dtype=x.dtype)
    ddt = torch.empty(b, L, h, device=dev, dtype=f32)
    dB = torch.empty(splits, b * nc, Q, g, n, device=dev, dtype=f32)
    rowB = torch.empty(b, h, nc, Q, device=dev, dtype=f32)
    strides = dict(SX=x.stride(1), SB=B.stride(1), SC=C.stride(1), SDY=dy.stride(1))
    # C.B^T again rather than saved by the forward: one small matmul against (b*nc, g, Q, Q) floats per layer kept
    _bwd_dx_db_kernel[grid](x_ptr=x, dt_ptr=dt, acum_ptr=acum, B_ptr=B, C_ptr=C, cb_ptr=_chunk_scores(B, C, Q), dy_ptr=dy,
                            dout_ptr=dout, dx_ptr=dx, ddt_ptr=ddt, dB_ptr=dB, rowB_ptr=rowB, L=L, NC=nc, **strides, **shape)
    dC = torch.empty_like(dB)
    rowC = torch.empty_like(rowB)
    _bwd_dc_kernel[grid](x_ptr=x, dt_ptr=dt, acum_ptr=acum, B_ptr=B, C_ptr=C, dy_ptr=dy, states_ptr=states, dC_ptr=dC,
                         rowC_ptr=rowC, L=L, NC=nc, **strides, **shape)

    # d acum -> d a (reverse cumulative sum inside each chunk) -> dt and A
    dacum = rowC - rowB
    dacum[..., -1] += dend
    da = dacum.flip(-1).cumsum(-1).flip(-1).permute(0, 2, 3, 1).reshape(b, L, h)
    ddt = ddt + da * A.float()
    dA = (da * dt).sum(dim=(0, 1))
    dB, dC = (t.sum(0).view(b, L, g, n)[:, :l].to(B_dtype).contiguous() for t in (dB, dC))
    # contiguous outputs, as the fake kernel declares them (a compiled graph checks the strides)
    return dx[:, :l].to(x_dtype).contiguous(), ddt[:, :l].contiguous(), dA.to(A.dtype), dB, dC, dinit


@torch.library.custom_op("mambagen::ssd_scan", mutates_args=())
def _scan_op(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             initial_state: torch.Tensor | None, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(x, dt, A, B, C, initial_state, chunk_size)


@_scan_op.register_fake
def _(x, dt, A, B, C, initial_state, chunk_size):
    b, l, h, p = x.shape
    n = B.shape[-1]
    nc = -(-l // min(chunk_size, l))
    return (x.new_empty(b, l, h, p, dtype=torch.float32), x.new_empty(b, h, p, n, dtype=torch.float32),
            x.new_empty(b, nc + 1, h, p, n, dtype=_states_dtype(x.dtype)))


@torch.library.custom_op("mambagen::ssd_scan_backward", mutates_args=())
def _scan_backward_op(dy: torch.Tensor, dfinal: torch.Tensor | None, x: torch.Tensor, dt: torch.Tensor,
                      A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, states: torch.Tensor,
                      chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor, torch.Tensor]:
    return _backward(dy, dfinal, x, dt, A, B, C, states, chunk_size)


@_scan_backward_op.register_fake
def _(dy, dfinal, x, dt, A, B, C, states, chunk_size):
    b, l, h, p = x.shape
    return (x.new_empty(x.shape), dt.new_empty(dt.shape, dtype=torch.float32), A.new_empty(A.shape),
            B.new_empty(B.shape), C.new_empty(C.shape), x.new_empty(b, h, p, B.shape[-1], dtype=torch.float32))


def _setup(ctx, inputs, output):
    x, dt, A, B, C, initial_state, chunk_size = inputs
    ctx.save_for_backward(x, dt, A, B, C, output[2])
    ctx.chunk_size, ctx.init_dtype = chunk_size, None if initial_state is None else initial_state.dtype


def _grad(ctx, dy, dfinal, _dstates):
    x, dt, A, B, C, states = ctx.saved_tensors
    dx, ddt, dA, dB, dC, dinit = _scan_backward_op(dy, dfinal, x, dt, A, B, C, states, ctx.chunk_size)
    return (dx, ddt.to(dt.dtype), dA, dB, dC,
            None if ctx.init_dtype is None else dinit.to(ctx.init_dtype), None)


_scan_op.register_autograd(_grad, setup_context=_setup)


def ssd_chunked_triton(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """`ssd_ref.ssd_chunked` on Triton: x (b, l, h, p), dt (b, l, h) softplus'd, A (h,), B/C (b, l, g, n)
    -> y (b, l, h, p) float32, final state (b, h, p, n) float32. Differentiable in every input."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the Triton scan takes float32, bf16 or fp16 inputs, not {x.dtype}")
    y, final, _ = _scan_op(x, dt, A, B, C, initial_state, int(chunk_size))
    return y, final
