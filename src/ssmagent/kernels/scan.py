"""The selective scan of training and prefill as Triton kernels, forward and backward.

Why: ``ssmagent.model.mamba.selective_scan`` is built for a CPU: a Python loop over time whose
steps are a few vectorised ops each. On a GPU every one of those ops is a kernel launch, so a
batch of 11,000-token Hanoi episodes spent seconds per training step launching kernels. Here one
program owns a (batch row, block of ``BLOCK_D`` channels) pair and walks the whole sequence with
its (BLOCK_D, N) state in registers: one launch forward, one backward, per layer.

Contract: that of ``selective_scan`` (x, dt: (b, l, d_in); A: (d_in, N); B, C: (b, l, N); h0:
(b, d_in, N) or None; float32), and the same numbers up to float rounding.

Forward, with a_t = exp(dt_t A)::

    h_t = a_t * h_{t-1} + (dt_t x_t) B_t          y_t = sum_n C_t[n] h_t[:, n]

It stores the state at the start of every chunk of ``CHUNK`` steps (``starts``). Backward walks
the chunks in reverse: it recomputes the chunk's states from its start into a per-program
scratch buffer, then runs the adjoint recurrence ``G_t = gy_t C_t + a_{t+1} G_{t+1}`` backwards,
where G_t = dLoss/dh_t, and turns each G_t into the gradients:

    gx_t = dt_t (G_t B_t)      gdt_t = x_t (G_t B_t) + sum_n A G_t a_t h_{t-1}
    gA  += dt_t G_t a_t h_{t-1}     gB_t = sum_d G_t dt_t x_t     gC_t = sum_d gy_t h_t

Sums over channels (gB, gC) cross programs, so each program writes its block's partial sums and
the host adds them up (one small reduction, no atomics, deterministic); gA, a sum over time and
batch, is kept per batch row the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssmagent.kernels.decode import HAS_TRITON, interpreting, require_triton, tl, triton

LOG2E = math.log2(math.e)
BLOCK_D = 16
"""Channels per program: small blocks give more programs (the work is a sequential walk)."""
CHUNK = 64
"""Steps between stored states: memory of b*d_in*N*l/CHUNK floats vs the recompute scratch."""
STAGES = 4
"""Software-pipelining depth of the walks over time: the loads of later steps are in flight while
a step computes (each step's inputs do not depend on the state, only its arithmetic does)."""


if HAS_TRITON:

    @triton.jit
    def _scan_fwd_kernel(
        x_ptr, dt_ptr, a2_ptr, b_ptr, c_ptr, h0_ptr, y_ptr, hl_ptr, st_ptr,
        L, DI, n_chunks,
        N: tl.constexpr, BLOCK: tl.constexpr, CH: tl.constexpr, HAS_H0: tl.constexpr, STAGES: tl.constexpr,
    ):
        pb = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        offs_n = tl.arange(0, N)
        mask_d = offs_d < DI
        mask_dn = mask_d[:, None]
        dn = offs_d[:, None] * N + offs_n[None, :]  # (BLOCK, N) offsets in a (d_in, N) matrix
        a2 = tl.load(a2_ptr + dn, mask=mask_dn, other=0.0)  # A log2(e)
        if HAS_H0:
            h = tl.load(h0_ptr + pb * DI * N + dn, mask=mask_dn, other=0.0)
        else:
            h = tl.zeros((BLOCK, N), dtype=tl.float32)
        row = pb * L
        for c in range(0, n_chunks):
            s = c * CH
            tl.store(st_ptr + (pb * n_chunks + c) * DI * N + dn, h, mask=mask_dn)
            # the inputs do not depend on the state: the pipeliner loads STAGES steps ahead
            for i in tl.range(0, tl.minimum(CH, L - s), num_stages=STAGES):
                t = s + i
                x = tl.load(x_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                dt = tl.load(dt_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                bt = tl.load(b_ptr + (row + t) * N + offs_n)
                ct = tl.load(c_ptr + (row + t) * N + offs_n)
                h = tl.exp2(dt[:, None] * a2) * h + (dt * x)[:, None] * bt[None, :]
                tl.store(y_ptr + (row + t) * DI + offs_d, tl.sum(h * ct[None, :], axis=1), mask=mask_d)
        tl.store(hl_ptr + pb * DI * N + dn, h, mask=mask_dn)

    @triton.jit
    def _scan_bwd_kernel(
        x_ptr, dt_ptr, a2_ptr, b_ptr, c_ptr, st_ptr, gy_ptr, ghl_ptr,
        gx_ptr, gdt_ptr, ga_ptr, gb_ptr, gc_ptr, gh0_ptr, scratch_ptr,
        L, DI, n_chunks, n_blocks,
        N: tl.constexpr, BLOCK: tl.constexpr, CH: tl.constexpr, HAS_GHL: tl.constexpr, STAGES: tl.constexpr,
    ):
        pb = tl.program_id(0)
        pd = tl.program_id(1)
        offs_d = pd * BLOCK + tl.arange(0, BLOCK)
        offs_n = tl.arange(0, N)
        mask_d = offs_d < DI
        mask_dn = mask_d[:, None]
        dn = offs_d[:, None] * N + offs_n[None, :]
        local = tl.arange(0, BLOCK)[:, None] * N + offs_n[None, :]  # (BLOCK, N) in the scratch
        scratch = scratch_ptr + (pb * n_blocks + pd) * CH * BLOCK * N
        a2 = tl.load(a2_ptr + dn, mask=mask_dn, other=0.0)
        A = a2 / 1.4426950408889634  # back to A: d(dt A)/d dt
        if HAS_GHL:
            g = tl.load(ghl_ptr + pb * DI * N + dn, mask=mask_dn, other=0.0)  # a_{t+1} G_{t+1}
        else:
            g = tl.zeros((BLOCK, N), dtype=tl.float32)
        ga = tl.zeros((BLOCK, N), dtype=tl.float32)
        row = pb * L
        part = (pb * n_blocks + pd) * L  # row of this program's partial sums of gB, gC
        for cc in range(0, n_chunks):
            c = n_chunks - 1 - cc
            s = c * CH
            steps = tl.minimum(CH, L - s)
            start = tl.load(st_ptr + (pb * n_chunks + c) * DI * N + dn, mask=mask_dn, other=0.0)
            h = start
            for i in tl.range(0, steps, num_stages=STAGES):  # the chunk's states, recomputed from its start
                t = s + i
                x = tl.load(x_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                dt = tl.load(dt_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                bt = tl.load(b_ptr + (row + t) * N + offs_n)
                h = tl.exp2(dt[:, None] * a2) * h + (dt * x)[:, None] * bt[None, :]
                tl.store(scratch + i * BLOCK * N + local, h)
            for ii in tl.range(0, steps, num_stages=STAGES):
                i = steps - 1 - ii
                t = s + i
                x = tl.load(x_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                dt = tl.load(dt_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                gy = tl.load(gy_ptr + (row + t) * DI + offs_d, mask=mask_d, other=0.0)
                bt = tl.load(b_ptr + (row + t) * N + offs_n)
                ct = tl.load(c_ptr + (row + t) * N + offs_n)
                h = tl.load(scratch + i * BLOCK * N + local)
                if i > 0:
                    h_prev = tl.load(scratch + (i - 1) * BLOCK * N + local)
                else:
                    h_prev = start
                a = tl.exp2(dt[:, None] * a2)
                G = gy[:, None] * ct[None, :] + g  # dLoss/dh_t
                tl.store(gc_ptr + (part + t) * N + offs_n, tl.sum(gy[:, None] * h, axis=0))
                tl.store(gb_ptr + (part + t) * N + offs_n, tl.sum(G * (dt * x)[:, None], axis=0))
                g_dtx = tl.sum(G * bt[None, :], axis=1)  # dLoss/d(dt x)
                da = G * a * h_prev  # dLoss/d(dt A)
                tl.store(gx_ptr + (row + t) * DI + offs_d, g_dtx * dt, mask=mask_d)
                tl.store(gdt_ptr + (row + t) * DI + offs_d, g_dtx * x + tl.sum(da * A, axis=1), mask=mask_d)
                ga += da * dt[:, None]
                g = a * G
        tl.store(gh0_ptr + pb * DI * N + dn, g, mask=mask_dn)
        tl.store(ga_ptr + pb * DI * N + dn, ga, mask=mask_dn)


def _check(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    require_triton()
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError("the triton scan needs a CUDA device (or TRITON_INTERPRET=1 on CPU)")
    N = A.shape[1]
    if N & (N - 1):
        raise ValueError(f"the triton scan needs d_state to be a power of two, got {N}")
    if any(v.dtype != torch.float32 for v in (x, dt, A, B, C)):
        raise TypeError("the triton scan works in float32")


class TritonSelectiveScan(torch.autograd.Function):
    """The selective scan with Triton kernels forward and backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0):  # type: ignore[override]
        _check(x, dt, A, B, C)
        b, l, d = x.shape
        N = A.shape[1]
        x, dt, B, C = (v.contiguous() for v in (x, dt, B, C))
        a2 = (A * LOG2E).contiguous()
        n_chunks = -(-l // CHUNK)
        starts = x.new_empty(b, n_chunks, d, N)
        y = x.new_empty(b, l, d)
        h_last = x.new_empty(b, d, N)
        h0c = h0.contiguous() if h0 is not None else x.new_zeros(1)
        grid = (b, triton.cdiv(d, BLOCK_D))
        _scan_fwd_kernel[grid](
            x, dt, a2, B, C, h0c, y, h_last, starts, l, d, n_chunks,
            N=N, BLOCK=BLOCK_D, CH=CHUNK, HAS_H0=h0 is not None, STAGES=STAGES,
        )
        ctx.save_for_backward(x, dt, a2, B, C, starts)
        ctx.has_h0 = h0 is not None
        ctx.set_materialize_grads(False)
        return y, h_last

    @staticmethod
    def backward(ctx, gy, gh_last):  # type: ignore[override]
        x, dt, a2, B, C, starts = ctx.saved_tensors
        b, l, d = x.shape
        N = a2.shape[1]
        n_chunks, n_blocks = starts.shape[1], triton.cdiv(d, BLOCK_D)
        gy = x.new_zeros(b, l, d) if gy is None else gy.contiguous()
        ghl = gh_last.contiguous() if gh_last is not None else x.new_zeros(1)
        gx, gdt = torch.empty_like(x), torch.empty_like(dt)
        ga = x.new_empty(b, d, N)
        gb, gc = x.new_empty(b, n_blocks, l, N), x.new_empty(b, n_blocks, l, N)
        gh0 = x.new_empty(b, d, N)
        scratch = x.new_empty(b, n_blocks, CHUNK, BLOCK_D, N)
        _scan_bwd_kernel[(b, n_blocks)](
            x, dt, a2, B, C, starts, gy, ghl, gx, gdt, ga, gb, gc, gh0, scratch, l, d, n_chunks, n_blocks,
            N=N, BLOCK=BLOCK_D, CH=CHUNK, HAS_GHL=gh_last is not None, STAGES=STAGES,
        )
        return gx, gdt, ga.sum(0), gb.sum(1), gc.sum(1), gh0 if ctx.has_h0 else None
