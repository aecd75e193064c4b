"""The decode step on the GPU: fused Triton kernels, their PyTorch references, and the step itself.

What a Mamba decode step does per layer (``MambaLM.step`` is the readable version)::

    h      = RMSNorm(x)                                        x: the float32 residual (B, d_model)
    xi, z  = in_proj(h)                                        GEMV  d_model -> 2 d_inner
    xc     = SiLU(conv(conv_state ++ xi))                      conv_state shifts by one (in place)
    dt_low, B, C = x_proj(xc)                                  GEMV  d_inner -> R + 2N
    dt     = softplus(dt_proj(dt_low))                         GEMV  R -> d_inner (R = d_model/16)
    h_ssm  = exp(dt A) h_ssm + dt B xc                         ssm_state (in place)
    y      = (C · h_ssm + D xc) * SiLU(z)
    x      = x + out_proj(y)                                   GEMV  d_inner -> d_model

x_proj needs xc of *every* channel, so no kernel can run from the conv to the gate without a
grid-wide reduction in the middle. The work is therefore cut at x_proj into two kernels:

* ``_mamba_in_kernel``  — conv-state update + SiLU (+ x_proj's partial sums, see below);
* ``_mamba_out_kernel`` — dt_proj (a rank-R dot per channel) + bias + softplus + selective state
  update + D skip + SiLU(z) gate (+ out_proj's partial sums and the residual add).

Each runs in one of two modes (a ``FUSED`` compile-time switch):

* **split** (any batch; the issue's design): in_proj, x_proj and out_proj go through cuBLAS
  (``F.linear``); the two kernels do everything between them. 6 launches per layer
  (norm, in_proj, in-kernel, x_proj, out-kernel, out_proj).
* **fused** (small batches, ``fuse_max_batch``): the kernels also do the GEMVs around them:
  ``_mamba_in_kernel`` computes the RMSNorm and its rows of in_proj, then adds its channels'
  share of x_proj into a float32 buffer with atomics; ``_mamba_out_kernel`` adds its channels'
  share of out_proj into the residual with atomics. 2 launches per layer. At batch 1 the step is
  bound by launch latency, not bytes (a layer's weights move in ~2 µs at 3 TB/s, about one
  kernel's launch-to-finish time), so the launch count per layer is what the roofline target
  hinges on. Atomic float adds make the last bits of the sums depend on the order the blocks
  finish in (differences ~1e-7 relative, far inside the fp32 tolerance).

All arithmetic inside the kernels is float32 (weights and activations are loaded in their own
dtype and converted); the SSM state is float32, the conv state has the model's dtype, as in
``MambaLM.allocate_state``. In split mode the GEMVs run in the model's dtype (bf16 activations for
a bf16 model); in fused mode everything between the weights is float32, so a bf16 model decodes
as ``MambaLM.step`` does (float32 math on bf16 weights).

Programmatic dependent launch (PDL, Hopper and newer): every kernel loads its own *weights*
(which no kernel writes) and waits for the previous kernel (``gdc_wait``); it lets the next
kernel's blocks start (``gdc_launch_dependents``) after that wait, or, for the fused layer kernels
(``launch_early``), at once — so their weight loads overlap the kernels before them, as far ahead as
the SMs have room for blocks. Every write, and every read of what the kernels of this step write,
sits after the wait. A layer's decode states are read before it (``EARLY``, one batch row per
block): they were last written by that layer's kernels one step earlier, and those have finished,
because a kernel finishes only after its wait returns, which is after the previous kernel finished,
and the head kernel lets the next kernel start only after its own wait — so no kernel of a step
starts before every kernel of the step before it has finished. The partial sums use relaxed
atomics: nothing reads them before the kernel that makes them has finished.

At batch 1 each layer kernel's time after the wait is a serial chain of loads, reductions and
atomics (docs/performance.md, "What limits batch 1"), so the fused kernels are shaped to keep it
short: in_proj's x rows and z rows go to separate blocks (``split_z``: half the products per
block, and the z blocks skip the conv); d_model is cut into at most four chunks of
``chunk_for(d_model)`` columns (768 = 3 x 256: no padding, and a 256-column row's reduction stays
within one warp); RMSNorm's scale multiplies the sums rather than the inputs, and x is loaded in
the weight tile's own shape, so each row's sum of squares lands where its products' sum does; the
weights are converted to float32 before the wait, in_proj's already multiplied by the norm's
weight (``pin``: ``_pin`` keeps the compiler from moving that work to after the wait, where the
weights are used); and where a small vector meets a weight tile it is passed through
``_relayout`` so that the compiler converts the vector, not the tile (``benchmarks/kernel_sass.py``
shows the compiled code after the wait). The head (lm_head and the greedy pick's per-block
maxima) reuses in_proj's chunked loads and sums, with its tiles left in bf16 until after the wait.

In-place updates (the conv window's shift, the SSM state, the residual) put a block barrier
between their loads and stores: Triton may hand an element's load and the store that overwrites
it to different threads (or replicate an element over threads), and without the barrier one thread
can overwrite a value another has not read yet. The interpreter, which runs a whole tile's load
before its store, cannot show this race; the GPU test at batch 256 with 64-channel blocks did
(errors up to 0.4 in float32, different on every run).

Triton is optional: this module imports with torch alone, and only the functions that launch
kernels need it. Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (slowly), which is
how CI checks them against the references below.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional: the GPU machine has it, CI installs it for the interpreter tests
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAS_TRITON = False

LOG2E = math.log2(math.e)
BACKENDS = ("torch", "triton", "graph")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def require_triton() -> None:
    if not HAS_TRITON:
        raise RuntimeError(
            "the triton/graph decode backends need the `triton` package (pip install 'ssmagent[gpu]'); "
            "use backend 'torch' without it"
        )


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def chunk_for(d_model: int) -> int:
    """The fused kernels' d_model chunk: at most 256 columns where 4 chunks cover d_model (768 = 3 x
    256, no padding; a 256-column chunk's reduction stays within one warp), more where they do not."""
    return max(min(256, _next_pow2(d_model)), _next_pow2(-(-d_model // 4)))


# --------------------------------------------------------------------------------------------
# PyTorch references: the same math as MambaLM.step, one piece per kernel
# --------------------------------------------------------------------------------------------


def conv_step_reference(xi: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Causal depthwise conv for one new input, then SiLU; shifts ``conv_state`` in place.

    xi: (B, d_in); conv_state: (B, d_in, K) (oldest first, any layout); weight: (d_in, 1, K)
    (``conv1d.weight``); bias: (d_in,) or None. Returns xc = SiLU(conv) (B, d_in), float32.
    The conv uses xi at full precision; the state stores it in its own dtype (as ``MambaLM.step``).
    """
    w = weight[:, 0, :].float()  # (d_in, K)
    window = torch.cat([conv_state[..., 1:].float(), xi.float().unsqueeze(-1)], dim=-1)  # (B, d_in, K)
    xc = (window * w).sum(-1)
    if bias is not None:
        xc = xc + bias.float()
    conv_state.copy_(window)
    return F.silu(xc)


def ssm_step_reference(
    xc: Tensor,
    z: Tensor,
    dbc: Tensor,
    dt_weight: Tensor,
    dt_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    ssm_state: Tensor,
) -> Tensor:
    """dt (dt_proj + bias + softplus) + selective state update + D skip + SiLU(z) gate, for one step.

    xc, z: (B, d_in); dbc: (B, R + 2N) = x_proj(xc) = (dt_low, B, C); dt_weight: (d_in, R);
    dt_bias, D: (d_in,); A_log: (d_in, N); ssm_state: (B, d_in, N) float32, updated in place.
    Returns y (B, d_in), float32.
    """
    N = A_log.shape[1]
    R = dt_weight.shape[1]
    dbc = dbc.float()
    dt_low, Bm, Cm = dbc[:, :R], dbc[:, R : R + N], dbc[:, R + N :]
    dt = F.softplus(F.linear(dt_low, dt_weight.float(), dt_bias.float()))  # (B, d_in)
    A2 = -torch.exp(A_log.float()) * LOG2E  # (d_in, N)
    xc = xc.float()
    dA = torch.exp2(dt.unsqueeze(-1) * A2)  # (B, d_in, N)
    h = ssm_state * dA + (dt * xc).unsqueeze(-1) * Bm.unsqueeze(1)
    ssm_state.copy_(h)
    y = (h * Cm.unsqueeze(1)).sum(-1) + xc * D.float()
    return y * F.silu(z.float())


def rmsnorm_reference(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def layer_step_reference(x: Tensor, block: Any, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
    """One whole Mamba block for one token, float32 math: returns the new residual (B, d_model).

    ``block`` is a ``MambaBlock``; conv_state (B, d_in, K) and ssm_state (B, d_in, N) are its
    layer's states, updated in place. Equal to what ``MambaLM.step`` does for that layer.
    """
    m = block.mixer
    d_in = m.D.shape[0]
    h = rmsnorm_reference(x, block.norm.weight, block.norm.eps)
    xz = F.linear(h, m.in_proj.weight.float(), None if m.in_proj.bias is None else m.in_proj.bias.float())
    xi, z = xz[:, :d_in], xz[:, d_in:]
    xc = conv_step_reference(xi, conv_state, m.conv1d.weight, m.conv1d.bias)
    dbc = F.linear(xc, m.x_proj.weight.float())
    y = ssm_step_reference(xc, z, dbc, m.dt_proj.weight, m.dt_proj.bias, m.A_log, m.D, ssm_state)
    out = F.linear(y, m.out_proj.weight.float(), None if m.out_proj.bias is None else m.out_proj.bias.float())
    return x.float() + out


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

if HAS_TRITON:
    _HAS_GDC = False
    try:  # programmatic dependent launch intrinsics (Triton >= 3.3 on NVIDIA)
        from triton.language.extra.cuda import gdc_launch_dependents as _gdc_launch
        from triton.language.extra.cuda import gdc_wait as _gdc_wait

        _HAS_GDC = True
    except Exception:  # pragma: no cover
        pass

    if _HAS_GDC:

        @triton.jit
        def _pdl_launch(PDL: tl.constexpr):
            if PDL:
                _gdc_launch()

        @triton.jit
        def _pdl_wait(PDL: tl.constexpr):
            if PDL:
                _gdc_wait()

    else:  # pragma: no cover

        @triton.jit
        def _pdl_launch(PDL: tl.constexpr):
            pass

        @triton.jit
        def _pdl_wait(PDL: tl.constexpr):
            pass

    @triton.jit
    def _silu(v):
        return v / (1.0 + tl.exp(-v))

    @triton.jit
    def _softplus(v):
        # log(1 + e^v) as torch computes it (v itself above 20); log1p through Goldberg's trick,
        # exact to a few ulp also where e^v is tiny (dt's usual range, v in [-7, -2])
        u = tl.exp(tl.minimum(v, 20.0))
        w = 1.0 + u
        lp = tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))
        return tl.where(v > 20.0, v, lp)

    @triton.jit
    def _relayout(v):
        """v itself (a sum over an axis of length one). Its use: a fresh layout, so that where v
        meets a weight tile the compiler converts v (a few floats) and not the tile, which it
        otherwise does through shared memory, 16 block barriers for out_proj's tile."""
        return tl.sum(tl.reshape(v, [v.shape[0], 1]), axis=1)

    if interpreting():  # the interpreter runs no inline assembly (and moves nothing)

        @triton.jit
        def _pin(v, PIN: tl.constexpr):
            return v

    else:

        @triton.jit
        def _pin(v, PIN: tl.constexpr):
            """float32 v itself, computed here where PIN: an opaque (side-effecting) copy, which the
            compiler may not move past the PDL wait, as it otherwise moves a weight's conversion to
            float32 (and products with other weights) to where the weight is used, after the wait."""
            if PIN:
                return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=False, pack=1)
            else:
                return v

    @triton.jit
    def _if_zero(mask, v):
        """mask where the scalar v is 0, else nothing (compared as a tensor: Triton's interpreter
        cannot combine a mask with a scalar comparison)."""
        return mask & ((mask.to(tl.int32) * 0 + v) == 0)

    @triton.jit
    def _row_chunk(W, rows, mask_r, stride, k: tl.constexpr, DM: tl.constexpr, CH: tl.constexpr):
        """Columns [k CH, (k + 1) CH) of the given rows of a row-major (·, DM) matrix: (rows, CH)."""
        offs = k * CH + tl.arange(0, CH)
        return tl.load(W + rows[:, None] * stride + offs[None, :], mask=mask_r[:, None] & (offs[None, :] < DM), other=0.0)

    @triton.jit
    def _col_chunk(W, cols, mask_c, stride, k: tl.constexpr, DM: tl.constexpr, CH: tl.constexpr, PIN: tl.constexpr):
        """Rows [k CH, (k + 1) CH) of the given columns of a row-major (DM, ·) matrix: (CH, cols);
        where PIN, in float32, converted here (before the wait)."""
        offs = k * CH + tl.arange(0, CH)
        w = tl.load(W + offs[:, None] * stride + cols[None, :], mask=(offs[:, None] < DM) & mask_c[None, :], other=0.0)
        if PIN:
            w = _pin(w.to(tl.float32), PIN)
        return w

    @triton.jit
    def _vec_chunk(V, k: tl.constexpr, DM: tl.constexpr, CH: tl.constexpr):
        offs = k * CH + tl.arange(0, CH)
        return tl.load(V + offs, mask=offs < DM, other=0.0).to(tl.float32)

    @triton.jit
    def _in_weights(W_IN, NORM_W, rows, mask_r, stride, k: tl.constexpr, DM: tl.constexpr, DI: tl.constexpr, CH: tl.constexpr, BOTH: tl.constexpr, PIN: tl.constexpr):
        """Chunk k of the given in_proj rows, of the z rows DI further on where BOTH (else the first
        tile again, unused), and of the norm's weight; where PIN, the tiles are float32 and already
        multiplied by the norm's weight."""
        nw = _vec_chunk(NORM_W, k, DM, CH)
        w_a = _row_chunk(W_IN, rows, mask_r, stride, k, DM, CH)
        if PIN:
            w_a = _pin(w_a.to(tl.float32) * nw[None, :], PIN)
        if BOTH:
            w_b = _row_chunk(W_IN, rows + DI, mask_r, stride, k, DM, CH)
            if PIN:
                w_b = _pin(w_b.to(tl.float32) * nw[None, :], PIN)
        else:
            w_b = w_a
        return w_a, w_b, nw

    @triton.jit
    def _in_chunk(XROW, w_a, w_b, nw, k: tl.constexpr, DM: tl.constexpr, CH: tl.constexpr, BOTH: tl.constexpr, PIN: tl.constexpr):
        """One chunk of d_model for in_proj: (sum of x², products with the first rows, with the z
        rows where BOTH), the RMSNorm's scale left out (it multiplies the sums). x is loaded in
        the tile's own shape (each row the same), so that no thread needs another's x: no shared
        memory, and each row's sum of x² comes out where its products' sum does."""
        offs = k * CH + tl.arange(0, CH)
        same = tl.zeros([w_a.shape[0], 1], dtype=tl.int32)
        x = tl.load(XROW + offs[None, :] + same, mask=(offs[None, :] < DM) & (same == 0), other=0.0).to(tl.float32)
        if PIN:  # the tiles hold the norm's weight already
            h = x
        else:
            h = x * nw[None, :]
        pa = w_a.to(tl.float32) * h
        if BOTH:
            pb = w_b.to(tl.float32) * h
        else:
            pb = pa
        return x * x, pa, pb

    @triton.jit
    def _in_tiles(W_IN, NORM_W, rows, mask_r, stride, DM: tl.constexpr, DI: tl.constexpr, CH: tl.constexpr, NCH: tl.constexpr, BOTH: tl.constexpr, PIN: tl.constexpr):
        """``_in_weights`` of each of d_model's NCH chunks: a tuple of four (w_a, w_b, nw), in which
        the chunks from NCH on repeat chunk 0 (unused: Triton has no tuples of a constexpr length)."""
        t0 = _in_weights(W_IN, NORM_W, rows, mask_r, stride, 0, DM, DI, CH, BOTH, PIN)
        t1 = t0
        t2 = t0
        t3 = t0
        if NCH > 1:
            t1 = _in_weights(W_IN, NORM_W, rows, mask_r, stride, 1, DM, DI, CH, BOTH, PIN)
        if NCH > 2:
            t2 = _in_weights(W_IN, NORM_W, rows, mask_r, stride, 2, DM, DI, CH, BOTH, PIN)
        if NCH > 3:
            t3 = _in_weights(W_IN, NORM_W, rows, mask_r, stride, 3, DM, DI, CH, BOTH, PIN)
        return t0, t1, t2, t3

    @triton.jit
    def _in_sums(XROW, tiles, DM: tl.constexpr, CH: tl.constexpr, NCH: tl.constexpr, BOTH: tl.constexpr, PIN: tl.constexpr):
        """``_in_chunk`` over d_model's NCH chunks (``_in_tiles``), summed in the tiles' shape:
        (x², products with the first rows, with the z rows where BOTH); the caller reduces them."""
        ss, pa, pb = _in_chunk(XROW, tiles[0][0], tiles[0][1], tiles[0][2], 0, DM, CH, BOTH, PIN)
        for k in tl.static_range(1, NCH):
            sk, ak, bk = _in_chunk(XROW, tiles[k][0], tiles[k][1], tiles[k][2], k, DM, CH, BOTH, PIN)
            ss, pa, pb = ss + sk, pa + ak, pb + bk
        return ss, pa, pb

    @triton.jit
    def _conv_tail(
        b, xi, old, cbase, s_ck, offs_k, smask, cw, cb, XC, stride_xcb, offs_d, mask_d,
        wxp, offs_p, DBC, stride_dbcb, P: tl.constexpr, K: tl.constexpr, FUSED: tl.constexpr,
        SEM: tl.constexpr, BARRIER: tl.constexpr,
    ):
        """The conv window's shift (in place), SILU(conv) into XC and, fused, x_proj's share."""
        # window = (state[1], ..., state[K-1], xi): the new state and the conv's input
        window = tl.where(offs_k[:, None] == K - 1, xi[None, :], old.to(tl.float32))
        if BARRIER:  # in place: the thread that stores row k may not be the one that loaded row
            # k + 1, so every load of the block must land before any store (a race on the GPU otherwise)
            tl.debug_barrier()
        tl.store(cbase + offs_k[:, None] * s_ck, window.to(cbase.dtype.element_ty), mask=smask)
        acc = tl.sum(cw * window, axis=0) + cb
        xc = _silu(acc)
        tl.store(XC + b * stride_xcb + offs_d, xc.to(XC.dtype.element_ty), mask=mask_d)
        if FUSED:  # this block's share of x_proj(xc)
            part = tl.sum(wxp * _relayout(xc)[None, :], axis=1)  # (P_PAD,)
            tl.atomic_add(DBC + b * stride_dbcb + offs_p, part, mask=offs_p < P, sem=SEM)

    @triton.jit
    def _out_chunk(XROW, w_o, y, b_o, k: tl.constexpr, DM: tl.constexpr, CH: tl.constexpr, HAS_B: tl.constexpr, SEM: tl.constexpr):
        """Adds this block's share of out_proj(y), rows [k CH, (k + 1) CH), into the residual."""
        offs = k * CH + tl.arange(0, CH)
        out = tl.sum(w_o.to(tl.float32) * y[None, :], axis=1)  # (CH,)
        if HAS_B:
            out += b_o
        tl.atomic_add(XROW + offs, out, mask=offs < DM, sem=SEM)

    @triton.jit
    def _mamba_in_kernel(
        X, stride_xb,  # fused: float32 residual (B, DM)
        NORM_W,  # fused: (DM,)
        W_IN, stride_win, B_IN,  # fused: in_proj (2 DI, DM), bias (2 DI,) or dummy
        XZ, stride_xzb,  # split: in_proj output (B, 2 DI); its first DI columns are xi
        CONV, s_cb, s_ck, s_cd,  # conv state (B, K, DI) by strides, updated in place
        CONV_W, s_cwd, s_cwk, CONV_B,  # conv1d weight (DI, 1, K) by strides, bias (DI,) or dummy
        XC, stride_xcb,  # out: SiLU(conv) (B, DI)
        Z, stride_zb,  # fused, out: z (B, DI), float32
        W_X, stride_wx,  # fused: x_proj (P, DI)
        DBC, stride_dbcb,  # fused, out: x_proj(xc), float32 (B, P), zeroed beforehand (atomic +=)
        n_rows, rows_per_prog, eps,
        DM: tl.constexpr, DI: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
        P: tl.constexpr, P_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
        FUSED: tl.constexpr, HAS_B_IN: tl.constexpr, HAS_CONV_B: tl.constexpr, PDL: tl.constexpr,
        SEM: tl.constexpr = "relaxed", CH: tl.constexpr = 256, NCH: tl.constexpr = 1, EARLY: tl.constexpr = False,
        SPLIT_Z: tl.constexpr = False, LAUNCH_EARLY: tl.constexpr = False, PIN: tl.constexpr = False,
    ):
        if LAUNCH_EARLY:
            _pdl_launch(PDL)
        pid_d = tl.program_id(0)
        pid_r = tl.program_id(1)
        # fused with SPLIT_Z: grid axis 2 is the half of in_proj's rows this block computes (0: x,
        # with the conv and x_proj after it; 1: z), so each block holds half the weights
        half = tl.program_id(2)
        BOTH: tl.constexpr = not SPLIT_Z
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < DI
        mask_x = _if_zero(mask_d, half)  # the conv's channels (none in a z block)
        offs_k = tl.arange(0, K_PAD)
        # ---- weights (nothing writes them: loaded before waiting on the previous kernel)
        cw = _pin(tl.load(
            CONV_W + offs_d[None, :] * s_cwd + offs_k[:, None] * s_cwk,
            mask=(offs_k[:, None] < K) & mask_x[None, :], other=0.0,
        ).to(tl.float32), PIN)  # (K_PAD, BLOCK_D)
        if HAS_CONV_B:
            cb = _pin(tl.load(CONV_B + offs_d, mask=mask_x, other=0.0).to(tl.float32), PIN)
        else:
            cb = tl.zeros([BLOCK_D], dtype=tl.float32)
        offs_p = tl.arange(0, P_PAD)
        wxp = cb[None, :]  # (x_proj's tile in the fused mode; unused in the split mode)
        if FUSED:
            # this block's rows of in_proj (its channels of x and of z, or of its half), in NCH
            # chunks of CH columns: d_model 768 = 3 x 256 needs no padding, and a chunk's reduction
            # stays within a warp
            rows_a = offs_d + half * DI
            tiles = _in_tiles(W_IN, NORM_W, rows_a, mask_d, stride_win, DM, DI, CH, NCH, BOTH, PIN)
            if HAS_B_IN:
                ba = _pin(tl.load(B_IN + rows_a, mask=mask_d, other=0.0).to(tl.float32), PIN)
                if BOTH:
                    bz = _pin(tl.load(B_IN + DI + offs_d, mask=mask_d, other=0.0).to(tl.float32), PIN)
            wxp = _pin(tl.load(
                W_X + offs_p[:, None] * stride_wx + offs_d[None, :],
                mask=(offs_p[:, None] < P) & mask_x[None, :], other=0.0,
            ).to(tl.float32), PIN)  # (P_PAD, BLOCK_D)
        smask = (offs_k[:, None] < K) & mask_x[None, :]
        omask = (offs_k[:, None] + 1 < K) & mask_x[None, :]
        row0 = pid_r * rows_per_prog
        old = tl.zeros([K_PAD, BLOCK_D], dtype=CONV.dtype.element_ty)  # the window, loaded below
        if EARLY:  # one row per program: its conv window, which no kernel before this one in the
            # chain writes (this layer's in-kernel of the previous step did, and has finished)
            old = tl.load(CONV + row0 * s_cb + offs_d[None, :] * s_cd + (offs_k[:, None] + 1) * s_ck, mask=omask, other=0.0)
            tl.debug_barrier()  # the in-place shift's barrier (see _conv_tail), here before the wait
        _pdl_wait(PDL)
        if not LAUNCH_EARLY:
            _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        # ---- activations and states
        for b in range(row0, tl.minimum(row0 + rows_per_prog, n_rows)):
            cbase = CONV + b * s_cb + offs_d[None, :] * s_cd
            if not EARLY:
                old = tl.load(cbase + (offs_k[:, None] + 1) * s_ck, mask=omask, other=0.0)
            if FUSED:  # RMSNorm's scale r multiplies the sums, so its reduction runs beside theirs
                ss, pa, pb = _in_sums(X + b * stride_xb, tiles, DM, CH, NCH, BOTH, PIN)
                r = 1.0 / tl.sqrt(tl.sum(ss, axis=1) / DM + eps)  # (BLOCK_D,), every row the same
                xi = tl.sum(pa, axis=1) * r  # (BLOCK_D,): x, or with SPLIT_Z this block's half
                if HAS_B_IN:
                    xi += ba
                if SPLIT_Z:
                    if half == 0:
                        _conv_tail(b, xi, old, cbase, s_ck, offs_k, smask, cw, cb, XC, stride_xcb, offs_d, mask_d,
                                   wxp, offs_p, DBC, stride_dbcb, P, K, FUSED, SEM, not EARLY)
                    else:
                        tl.store(Z + b * stride_zb + offs_d, xi, mask=mask_d)
                else:
                    z = tl.sum(pb, axis=1) * r
                    if HAS_B_IN:
                        z += bz
                    tl.store(Z + b * stride_zb + offs_d, z, mask=mask_d)
                    _conv_tail(b, xi, old, cbase, s_ck, offs_k, smask, cw, cb, XC, stride_xcb, offs_d, mask_d,
                               wxp, offs_p, DBC, stride_dbcb, P, K, FUSED, SEM, not EARLY)
            else:
                xi = tl.load(XZ + b * stride_xzb + offs_d, mask=mask_d, other=0.0).to(tl.float32)
                _conv_tail(b, xi, old, cbase, s_ck, offs_k, smask, cw, cb, XC, stride_xcb, offs_d, mask_d,
                           wxp, offs_p, DBC, stride_dbcb, P, K, FUSED, SEM, not EARLY)

    @triton.jit
    def _mamba_out_kernel(
        XC, stride_xcb,  # (B, DI)
        Z, stride_zb,  # (B, DI)
        DBC, stride_dbcb,  # (B, P) = (dt_low, B, C)
        W_DT, s_wdt_d, s_wdt_r, B_DT,  # dt_proj (DI, R), bias (DI,)
        A_LOG, s_a_d, s_a_n,  # (DI, N)
        D_SKIP,  # (DI,)
        SSM, s_sb, s_sn, s_sd,  # ssm state (B, N, DI) by strides, float32, updated in place
        Y, stride_yb,  # split, out: y (B, DI)
        W_OUT, stride_wo, B_OUT,  # fused: out_proj (DM, DI), bias (DM,) or dummy
        X, stride_xb,  # fused, out (atomic +=): the float32 residual (B, DM)
        n_rows, rows_per_prog,
        DI: tl.constexpr, N: tl.constexpr, N_PAD: tl.constexpr, R: tl.constexpr, R_PAD: tl.constexpr,
        DM: tl.constexpr, BLOCK_D: tl.constexpr,
        FUSED: tl.constexpr, HAS_B_OUT: tl.constexpr, PDL: tl.constexpr,
        SEM: tl.constexpr = "relaxed", CH: tl.constexpr = 256, NCH: tl.constexpr = 1, EARLY: tl.constexpr = False,
        LAUNCH_EARLY: tl.constexpr = False, PIN: tl.constexpr = False,
    ):
        if LAUNCH_EARLY:
            _pdl_launch(PDL)
        pid_d = tl.program_id(0)
        pid_r = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < DI
        offs_r = tl.arange(0, R_PAD)
        offs_n = tl.arange(0, N_PAD)
        mask_n = offs_n < N
        # ---- weights
        wdt = _pin(tl.load(
            W_DT + offs_d[:, None] * s_wdt_d + offs_r[None, :] * s_wdt_r,
            mask=mask_d[:, None] & (offs_r[None, :] < R), other=0.0,
        ).to(tl.float32), PIN)  # (BLOCK_D, R_PAD)
        bdt = _pin(tl.load(B_DT + offs_d, mask=mask_d, other=0.0).to(tl.float32), PIN)
        nmask = mask_n[:, None] & mask_d[None, :]
        a_log = tl.load(A_LOG + offs_d[None, :] * s_a_d + offs_n[:, None] * s_a_n, mask=nmask, other=0.0)
        A2 = _pin(-tl.exp(a_log.to(tl.float32)) * 1.4426950408889634, PIN)  # (N_PAD, BLOCK_D)   A log2(e)
        dsk = _pin(tl.load(D_SKIP + offs_d, mask=mask_d, other=0.0).to(tl.float32), PIN)
        if FUSED:  # this block's columns of out_proj, in NCH chunks of CH rows (and the bias's)
            w_o0 = _col_chunk(W_OUT, offs_d, mask_d, stride_wo, 0, DM, CH, PIN)
            if NCH > 1:
                w_o1 = _col_chunk(W_OUT, offs_d, mask_d, stride_wo, 1, DM, CH, PIN)
            if NCH > 2:
                w_o2 = _col_chunk(W_OUT, offs_d, mask_d, stride_wo, 2, DM, CH, PIN)
            if NCH > 3:
                w_o3 = _col_chunk(W_OUT, offs_d, mask_d, stride_wo, 3, DM, CH, PIN)
            first = (pid_d == 0).to(tl.float32)  # the bias is added by the first block only
            b_o0 = 0.0
            b_o1 = 0.0
            b_o2 = 0.0
            b_o3 = 0.0
            if HAS_B_OUT:
                b_o0 = _vec_chunk(B_OUT, 0, DM, CH) * first
                if NCH > 1:
                    b_o1 = _vec_chunk(B_OUT, 1, DM, CH) * first
                if NCH > 2:
                    b_o2 = _vec_chunk(B_OUT, 2, DM, CH) * first
                if NCH > 3:
                    b_o3 = _vec_chunk(B_OUT, 3, DM, CH) * first
        row0 = pid_r * rows_per_prog
        if EARLY:  # one row per program: its SSM state, last written by this layer's out-kernel of
            # the previous step (finished: see the in-kernel)
            h0 = tl.load(SSM + row0 * s_sb + offs_n[:, None] * s_sn + offs_d[None, :] * s_sd, mask=nmask, other=0.0)
            tl.debug_barrier()  # the in-place update's barrier (below), here before the wait
        _pdl_wait(PDL)
        if not LAUNCH_EARLY:
            _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        for b in range(row0, tl.minimum(row0 + rows_per_prog, n_rows)):
            # every load of the in-kernel's outputs first, so that their latencies overlap
            x = tl.load(XC + b * stride_xcb + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            z = tl.load(Z + b * stride_zb + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            drow = DBC + b * stride_dbcb
            dt_low = tl.load(drow + offs_r, mask=offs_r < R, other=0.0).to(tl.float32)
            Bv = tl.load(drow + R + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            Cv = tl.load(drow + R + N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            dt = _softplus(tl.sum(wdt * dt_low[None, :], axis=1) + bdt)  # (BLOCK_D,)
            sp = SSM + b * s_sb + offs_n[:, None] * s_sn + offs_d[None, :] * s_sd
            if EARLY:
                h = h0
            else:
                h = tl.load(sp, mask=nmask, other=0.0)
            h = h * tl.exp2(dt[None, :] * A2) + Bv[:, None] * (dt * x)[None, :]
            if not EARLY:
                tl.debug_barrier()  # in place: a replicated element must not be stored before all loads
            tl.store(sp, h, mask=nmask)
            y = tl.sum(Cv[:, None] * h, axis=0) + dsk * x
            y = y * _silu(z)
            if FUSED:  # this block's share of out_proj(y), added into the residual
                y = _relayout(y)
                xrow = X + b * stride_xb
                _out_chunk(xrow, w_o0, y, b_o0, 0, DM, CH, HAS_B_OUT, SEM)
                if NCH > 1:
                    _out_chunk(xrow, w_o1, y, b_o1, 1, DM, CH, HAS_B_OUT, SEM)
                if NCH > 2:
                    _out_chunk(xrow, w_o2, y, b_o2, 2, DM, CH, HAS_B_OUT, SEM)
                if NCH > 3:
                    _out_chunk(xrow, w_o3, y, b_o3, 3, DM, CH, HAS_B_OUT, SEM)
            else:
                tl.store(Y + b * stride_yb + offs_d, y.to(Y.dtype.element_ty), mask=mask_d)

    @triton.jit
    def _embed_kernel(
        TOK, EMB, stride_e, X, stride_xb, DBC, stride_dbcb,
        DM: tl.constexpr, DM_PAD: tl.constexpr, ZERO: tl.constexpr, ZERO_BLOCK: tl.constexpr, PDL: tl.constexpr,
    ):
        """x[b] = float(E[tok[b]]); zeroes row b of the x_proj accumulators (fused mode)."""
        b = tl.program_id(0)
        offs_m = tl.arange(0, DM_PAD)
        _pdl_wait(PDL)
        _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        t = tl.load(TOK + b)
        row = tl.load(EMB + t * stride_e + offs_m, mask=offs_m < DM, other=0.0).to(tl.float32)
        tl.store(X + b * stride_xb + offs_m, row, mask=offs_m < DM)
        offs_z = tl.arange(0, ZERO_BLOCK)
        for i in tl.static_range(0, ZERO, ZERO_BLOCK):
            tl.store(DBC + b * stride_dbcb + i + offs_z, tl.zeros([ZERO_BLOCK], tl.float32), mask=i + offs_z < ZERO)

    @triton.jit
    def _rmsnorm_kernel(
        X, stride_xb, O, stride_ob, NORM_W, H, stride_hb, eps,
        DM: tl.constexpr, DM_PAD: tl.constexpr, HAS_O: tl.constexpr, PDL: tl.constexpr,
    ):
        """(split mode) x += o (the previous layer's out_proj, if any); h = RMSNorm(x) in H's dtype."""
        b = tl.program_id(0)
        offs_m = tl.arange(0, DM_PAD)
        mask_m = offs_m < DM
        nw = tl.load(NORM_W + offs_m, mask=mask_m, other=0.0).to(tl.float32)
        _pdl_wait(PDL)
        _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        x = tl.load(X + b * stride_xb + offs_m, mask=mask_m, other=0.0)
        if HAS_O:
            x += tl.load(O + b * stride_ob + offs_m, mask=mask_m, other=0.0).to(tl.float32)
            tl.debug_barrier()  # in place: with d_model below the thread count elements are replicated
            tl.store(X + b * stride_xb + offs_m, x, mask=mask_m)
        r = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / DM + eps)
        tl.store(H + b * stride_hb + offs_m, (x * r * nw).to(H.dtype.element_ty), mask=mask_m)

    @triton.jit
    def _head_kernel(
        X, stride_xb, NORM_W, W, stride_w, LOGITS, stride_lb, PMAX, PIDX, n_vblocks, n_rows, V, eps,
        DM: tl.constexpr, BLOCK_V: tl.constexpr, PDL: tl.constexpr,
        CH: tl.constexpr = 256, NCH: tl.constexpr = 1,
    ):
        """(fused mode) logits = lm_head(RMSNorm_f(x)) in float32, with each block's (max, argmax).
        Shaped as the in-kernel's in_proj: d_model in NCH chunks of CH columns (768 is not padded
        to 1,024, and each row's reduction stays within a warp), x in the tiles' shape, the norm's
        scale on the sums. The tiles stay bf16 until after the wait: pinned in float32, as the layers'
        are, they take more registers (127 against 105 by Triton 3.9) and measured no faster."""
        pid = tl.program_id(0)
        offs_v = pid * BLOCK_V + tl.arange(0, BLOCK_V)
        mask_v = offs_v < V
        tiles = _in_tiles(W, NORM_W, offs_v, mask_v, stride_w, DM, 0, CH, NCH, False, False)
        _pdl_wait(PDL)
        _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        for b in range(0, n_rows):
            ss, pa, _pb = _in_sums(X + b * stride_xb, tiles, DM, CH, NCH, False, False)
            r = 1.0 / tl.sqrt(tl.sum(ss, axis=1) / DM + eps)  # (BLOCK_V,), every row the same
            logits = tl.sum(pa, axis=1) * r  # (BLOCK_V,)
            tl.store(LOGITS + b * stride_lb + offs_v, logits, mask=mask_v)
            lm = tl.where(mask_v, logits, float("-inf"))
            best = tl.max(lm, axis=0)
            first = tl.min(tl.where(lm == best, offs_v, 2147483647), axis=0)  # first index of the max
            tl.store(PMAX + b * n_vblocks + pid, best)
            tl.store(PIDX + b * n_vblocks + pid, first)

    @triton.jit
    def _pick_kernel(PMAX, PIDX, n_vblocks, NEXT, TOK, NB_PAD: tl.constexpr, PDL: tl.constexpr):
        """(fused mode) greedy pick: the first index of the row's largest logit, into NEXT and TOK."""
        b = tl.program_id(0)
        offs = tl.arange(0, NB_PAD)
        _pdl_wait(PDL)
        _pdl_launch(PDL)  # the next kernel may start (and prefetch its weights) now
        m = tl.load(PMAX + b * n_vblocks + offs, mask=offs < n_vblocks, other=float("-inf"))
        best = tl.max(m, axis=0)
        blk = tl.min(tl.where(m == best, offs, 2147483647), axis=0)
        t = tl.load(PIDX + b * n_vblocks + blk).to(tl.int64)
        tl.store(NEXT + b, t)
        tl.store(TOK + b, t)


# --------------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------------


@dataclass
class KernelConfig:
    """Block sizes and switches of the decode kernels, measured on an H100 for paper-130m
    (docs/performance.md, "Tuning data"): the fused blocks and switches by
    ``benchmarks/decode_diagnostics.py sweep`` at batch 1 (32 channels x 4 warps in both kernels,
    x and z rows in separate blocks, weights pinned before the wait, kernels launching the next
    early: 140.0 µs/step; 150.4 and 154.7 with 8 warps in the in- or out-kernel, 153.4 unpinned,
    212.5 launching after the wait), ``fuse_max_batch`` by its ``modes`` (fused 659 against split
    767 µs/step at batch 8, 1,254 against 794 at 16, the previous kernels), the split blocks by
    ``benchmarks/gpu_decode.py --tune``."""

    fuse_max_batch: int = 8  # batches up to this use the fused (GEMVs-in-kernel) mode
    block_d_in: int = 32  # fused _mamba_in_kernel: channels per block (d_inner / this blocks)
    block_d_out: int = 32  # fused _mamba_out_kernel: channels per block
    fused_rows: int | None = 1  # fused: batch rows per block (None: all rows in each block)
    block_v: int = 16  # fused head: vocabulary rows per block
    split_block_d: int = 64  # split mode: channels per block
    split_rows: int = 4  # split mode: batch rows per block
    num_warps_fused: int = 4  # fused kernels (in, out, head), unless overridden below
    num_warps_in: int | None = 4
    num_warps_out: int | None = 4
    num_warps_split: int = 4
    pdl: bool | None = None  # programmatic dependent launch; None = where supported (CUDA, sm >= 90)
    atomic_sem: str = "relaxed"  # the partial sums need no ordering: the next kernel reads them
    chunk: int | None = None  # fused: d_model in at most 4 chunks of this many (a power of two; None: chunk_for)
    early_state: bool = True  # fused, one row per block: load the layer's state before the PDL wait
    split_z: bool = True  # fused: in_proj's x and z rows in separate blocks of the in-kernel
    pin: bool = True  # fused: weights converted to float32 (in_proj's times the norm's) before the wait
    launch_early: bool = True  # fused: the layer kernels let the next kernel start before their own wait


def _pdl_supported(device: torch.device) -> bool:
    if not HAS_TRITON or not _HAS_GDC or interpreting() or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def d_model_chunks(kc: KernelConfig, d_model: int) -> tuple[int, int]:
    """(chunk, number of chunks) of d_model in the fused kernels: ``kc.chunk`` or ``chunk_for``."""
    chunk = kc.chunk or chunk_for(d_model)
    n_chunks = -(-d_model // chunk)
    if chunk & (chunk - 1) or n_chunks > 4:
        raise ValueError(f"chunk {chunk} must be a power of two that covers d_model {d_model} in at most 4 chunks")
    return chunk, n_chunks


def layer_meta(kc: KernelConfig, chunk: int, n_chunks: int, fused: bool, rows: int) -> dict[str, Any]:
    """The compile-time switches both layer kernels share: d_model's chunks, whether the states are
    loaded before the PDL wait (fused, one batch row per block), and the fused mode's
    ``launch_early`` and ``pin``. A function of the config alone, so that ``benchmarks/kernel_sass.py``
    compiles the kernels with the switches ``TritonStep`` launches them with."""
    return {
        "CH": chunk, "NCH": n_chunks, "EARLY": fused and rows == 1 and kc.early_state,
        "LAUNCH_EARLY": fused and kc.launch_early, "PIN": fused and kc.pin,
    }


class _Launcher:
    """Launches a Triton kernel, with PDL where enabled (falling back to none if refused)."""

    def __init__(self, pdl: bool) -> None:
        self.pdl = pdl
        self.compiled: dict[str, Any] = {}  # kernel name -> the last compiled kernel (n_regs, n_spills)

    def __call__(self, kernel, grid, *args, num_warps: int = 4, **meta) -> None:
        ret = None
        if self.pdl:
            try:
                ret = kernel[grid](*args, PDL=True, num_warps=num_warps, launch_pdl=True, **meta)
            except TypeError:  # pragma: no cover - a Triton without launch_pdl
                self.pdl = False
        if not self.pdl:
            ret = kernel[grid](*args, PDL=False, num_warps=num_warps, **meta)
        if ret is not None:
            name = getattr(getattr(kernel, "fn", None), "__name__", str(kernel))
            self.compiled[name + ("_fused" if meta.get("FUSED") else "")] = ret


def _layers(model: Any) -> list[tuple]:
    out = []
    for block in model.backbone.layers:
        m = block.mixer
        out.append(
            (
                block.norm.weight,
                m.in_proj.weight,
                m.in_proj.bias,
                m.conv1d.weight,
                m.conv1d.bias,
                m.x_proj.weight,
                m.dt_proj.weight,
                m.dt_proj.bias,
                m.A_log,
                m.D,
                m.out_proj.weight,
                m.out_proj.bias,
            )
        )
    return out


class TritonStep:
    """The decode step of one ``MambaLM`` through the Triton kernels (no CUDA graph).

    ``run(tokens, conv, ssm, ...)`` advances the states (in place) and returns float32 logits and
    the greedy next tokens. Parameters are read where they live (no copies are made), so in-place
    updates (optimizer steps) are seen at once; a ``.to()`` or a ``load_state_dict(assign=True)``
    that replaces parameter tensors needs a new ``TritonStep`` (``decode_step`` checks for that).
    """

    def __init__(self, model: Any, config: KernelConfig | None = None) -> None:
        require_triton()
        self.cfg = model.cfg  # no reference to the model itself (see _cached)
        self.kc = config or KernelConfig()
        p = model.backbone.embeddings.weight
        self.device = p.device
        if self.device.type != "cuda" and not interpreting():
            raise RuntimeError("the triton decode backend needs a CUDA device (or TRITON_INTERPRET=1 on CPU)")
        pdl = self.kc.pdl
        self.launch = _Launcher(_pdl_supported(self.device) if pdl is None else (pdl and _pdl_supported(self.device)))
        self.layers = _layers(model)
        self.embed_w = p
        self.head_w = model.lm_head.weight
        self.norm_f = model.backbone.norm_f
        c = self.cfg
        self.DM, self.DI, self.N, self.R, self.K = c.d_model, c.d_inner, c.d_state, c.dt_rank, c.d_conv
        self.P = self.R + 2 * self.N
        self.V = c.vocab_size
        self.eps = float(c.norm_eps)
        self._dummy = torch.zeros(1, device=self.device, dtype=torch.float32)
        self.chunk, self.n_chunks = d_model_chunks(self.kc, self.DM)
        self.signature = self.param_signature(model)

    @staticmethod
    def param_signature(model: Any) -> tuple:
        return tuple((p.data_ptr(), p.dtype) for p in model.parameters())

    # ---------------------------------------------------------------- pieces
    def fused_for(self, batch: int) -> bool:
        return batch <= self.kc.fuse_max_batch

    def layer_meta(self, fused: bool, rows: int) -> dict[str, Any]:
        return layer_meta(self.kc, self.chunk, self.n_chunks, fused, rows)

    def mamba_in(self, i: int, *, conv: Tensor, xc: Tensor, n_rows: int, x=None, z=None, dbc=None, xz=None) -> None:
        """Launch ``_mamba_in_kernel`` for layer i. conv: (B, K, DI) view. Fused when x is given."""
        nw, w_in, b_in, cw, cb, w_x = self.layers[i][:6]
        fused = x is not None
        kc, d = self.kc, self._dummy
        block = kc.block_d_in if fused else kc.split_block_d
        rows = (kc.fused_rows or n_rows) if fused else kc.split_rows
        warps = (kc.num_warps_in or kc.num_warps_fused) if fused else kc.num_warps_split
        split_z = fused and kc.split_z
        grid = (triton.cdiv(self.DI, block), triton.cdiv(n_rows, rows), 2 if split_z else 1)
        self.launch(
            _mamba_in_kernel, grid,
            x if fused else d, x.stride(0) if fused else 0,
            nw,
            w_in, w_in.stride(0), b_in if b_in is not None else d,
            xz if xz is not None else d, xz.stride(0) if xz is not None else 0,
            conv, conv.stride(0), conv.stride(1), conv.stride(2),
            cw, cw.stride(0), cw.stride(2), cb if cb is not None else d,
            xc, xc.stride(0),
            z if fused else d, z.stride(0) if fused else 0,
            w_x, w_x.stride(0),
            dbc if fused else d, dbc.stride(0) if fused else 0,
            n_rows, rows, self.eps,
            DM=self.DM, DI=self.DI, K=self.K, K_PAD=_next_pow2(self.K),
            P=self.P, P_PAD=_next_pow2(self.P), BLOCK_D=block,
            FUSED=fused, HAS_B_IN=b_in is not None, HAS_CONV_B=cb is not None, SEM=kc.atomic_sem,
            SPLIT_Z=split_z, **self.layer_meta(fused, rows), num_warps=warps,
        )

    def mamba_out(self, i: int, *, xc: Tensor, z: Tensor, dbc: Tensor, ssm: Tensor, n_rows: int, y=None, x=None) -> None:
        """Launch ``_mamba_out_kernel`` for layer i. ssm: (B, N, DI) view. Fused when x is given."""
        _, _, _, _, _, _, w_dt, b_dt, a_log, dsk, w_out, b_out = self.layers[i]
        fused = x is not None
        kc, d = self.kc, self._dummy
        block = kc.block_d_out if fused else kc.split_block_d
        rows = (kc.fused_rows or n_rows) if fused else kc.split_rows
        warps = (kc.num_warps_out or kc.num_warps_fused) if fused else kc.num_warps_split
        grid = (triton.cdiv(self.DI, block), triton.cdiv(n_rows, rows))
        self.launch(
            _mamba_out_kernel, grid,
            xc, xc.stride(0),
            z, z.stride(0),
            dbc, dbc.stride(0),
            w_dt, w_dt.stride(0), w_dt.stride(1), b_dt,
            a_log, a_log.stride(0), a_log.stride(1),
            dsk,
            ssm, ssm.stride(0), ssm.stride(1), ssm.stride(2),
            y if y is not None else d, y.stride(0) if y is not None else 0,
            w_out, w_out.stride(0), b_out if b_out is not None else d,
            x if fused else d, x.stride(0) if fused else 0,
            n_rows, rows,
            DI=self.DI, N=self.N, N_PAD=_next_pow2(self.N), R=self.R, R_PAD=_next_pow2(self.R),
            DM=self.DM, BLOCK_D=block,
            FUSED=fused, HAS_B_OUT=b_out is not None, SEM=kc.atomic_sem,
            **self.layer_meta(fused, rows), num_warps=warps,
        )

    def rmsnorm(self, x: Tensor, weight: Tensor, h: Tensor, o: Tensor | None = None) -> None:
        B = x.shape[0]
        self.launch(
            _rmsnorm_kernel, (B,),
            x, x.stride(0), o if o is not None else self._dummy, o.stride(0) if o is not None else 0,
            weight, h, h.stride(0), self.eps,
            DM=self.DM, DM_PAD=_next_pow2(self.DM), HAS_O=o is not None, num_warps=4,
        )

    # ---------------------------------------------------------------- the whole step
    @torch.no_grad()
    def run(
        self,
        tokens: Tensor,
        conv: Tensor,
        ssm: Tensor,
        *,
        logits_out: Tensor | None = None,
        next_out: Tensor | None = None,
        feedback: Tensor | None = None,
        fused: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """tokens (B,) long on the device; conv (n_layer, B, K, DI) and ssm (n_layer, B, N, DI) views
        of the states (``state.conv_state.transpose(-1, -2)``), advanced in place.

        Returns (logits (B, V) float32, next tokens (B,) long = the first argmax of each row).
        ``logits_out``/``next_out``: where to write them; ``feedback``: a second place to write the
        next tokens (the graph runner passes its token input buffer, so replays chain)."""
        if tokens.dtype != torch.long or not tokens.is_contiguous() or tokens.device != self.device:
            tokens = tokens.to(self.device, torch.long).contiguous()  # the kernels index it densely
        B = tokens.shape[0]
        fused = self.fused_for(B) if fused is None else fused
        dev, DM, DI, P, L = self.device, self.DM, self.DI, self.P, len(self.layers)
        f32 = torch.float32
        logits = logits_out if logits_out is not None else torch.empty(B, self.V, device=dev, dtype=f32)
        nxt = next_out if next_out is not None else torch.empty(B, device=dev, dtype=torch.long)
        x = torch.empty(B, DM, device=dev, dtype=f32)
        if fused:  # per-layer x_proj accumulators, zeroed by the embedding kernel
            dbc = torch.empty(B, L, P, device=dev, dtype=f32)
            dbcs = [dbc[:, i] for i in range(L)]
            zero = L * P
            xc = torch.empty(B, DI, device=dev, dtype=f32)
            z = torch.empty(B, DI, device=dev, dtype=f32)
            self.launch(
                _embed_kernel, (B,),
                tokens, self.embed_w, self.embed_w.stride(0), x, x.stride(0), dbc, dbc.stride(0),
                DM=DM, DM_PAD=_next_pow2(DM), ZERO=zero, ZERO_BLOCK=min(1024, _next_pow2(max(zero, 1))), num_warps=4,
            )
            for i in range(L):
                self.mamba_in(i, conv=conv[i], xc=xc, n_rows=B, x=x, z=z, dbc=dbcs[i])
                self.mamba_out(i, xc=xc, z=z, dbc=dbcs[i], ssm=ssm[i], n_rows=B, x=x)
            bv = self.kc.block_v
            nvb = triton.cdiv(self.V, bv)
            pmax = torch.empty(B, nvb, device=dev, dtype=f32)
            pidx = torch.empty(B, nvb, device=dev, dtype=torch.int32)
            self.launch(
                _head_kernel, (nvb,),
                x, x.stride(0), self.norm_f.weight, self.head_w, self.head_w.stride(0), logits, logits.stride(0),
                pmax, pidx, nvb, B, self.V, self.eps,
                DM=DM, BLOCK_V=bv, CH=self.chunk, NCH=self.n_chunks, num_warps=self.kc.num_warps_fused,
            )
            fb = feedback if feedback is not None else nxt
            self.launch(_pick_kernel, (B,), pmax, pidx, nvb, nxt, fb, NB_PAD=_next_pow2(nvb), num_warps=4)
            return logits, nxt
        # split mode: cuBLAS for the GEMMs, the kernels between them
        act = self.layers[0][1].dtype
        x.copy_(F.embedding(tokens, self.embed_w))
        h = torch.empty(B, DM, device=dev, dtype=act)
        xc = torch.empty(B, DI, device=dev, dtype=act)
        y = torch.empty(B, DI, device=dev, dtype=act)
        o = None
        for i, (nw, w_in, b_in, _, _, w_x, *_rest) in enumerate(self.layers):
            w_out, b_out = _rest[-2], _rest[-1]
            self.rmsnorm(x, nw, h, o)
            xz = F.linear(h, w_in, b_in)  # (B, 2 DI)
            self.mamba_in(i, conv=conv[i], xc=xc, n_rows=B, xz=xz)
            dbc = F.linear(xc, w_x)  # (B, P)
            self.mamba_out(i, xc=xc, z=xz[:, DI:], dbc=dbc, ssm=ssm[i], n_rows=B, y=y)
            o = F.linear(y, w_out, b_out)  # (B, DM)
        self.rmsnorm(x, self.norm_f.weight, h, o)
        _linear_f32(h, self.head_w, logits)
        torch.argmax(logits, dim=-1, out=nxt)
        if feedback is not None:
            feedback.copy_(nxt)
        return logits, nxt


_MM_F32_OUT: bool | None = None  # whether this torch's mm takes out_dtype (and with it out=); found on first use


def _linear_f32(h: Tensor, w: Tensor, out: Tensor) -> None:
    """out (float32) = h @ w.T; bf16 inputs accumulate in float32 and are written without rounding
    to bf16 where torch's mm takes ``out_dtype`` (so ties in greedy picks stay as rare as in fp32),
    straight into ``out`` (its ``mm.dtype_out`` overload comes with ``mm.dtype``): at batch 256 the
    logits are 51 MB, and a temporary's copy into ``out`` cost 33 µs of a 1.45 ms step
    (``decode_diagnostics.py split``)."""
    global _MM_F32_OUT
    if h.dtype == torch.float32:
        torch.mm(h, w.t(), out=out)
        return
    if _MM_F32_OUT is not False and h.is_cuda:
        try:
            torch.mm(h, w.t(), out_dtype=torch.float32, out=out)
            _MM_F32_OUT = True
            return
        except (TypeError, RuntimeError):
            _MM_F32_OUT = False
    out.copy_(F.linear(h, w))


# --------------------------------------------------------------------------------------------
# Kernel wrappers with reference signatures (what the tests compare, kernel by kernel)
# --------------------------------------------------------------------------------------------


def conv_step(xi: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None, *, block_d: int = 32) -> Tensor:
    """Triton version of ``conv_step_reference`` (split-mode ``_mamba_in_kernel``); same contract,
    the output in xi's dtype."""
    require_triton()
    B, DI = xi.shape
    K = conv_state.shape[-1]
    cs = conv_state.transpose(-1, -2)  # (B, K, DI)
    xc = torch.empty_like(xi)
    d = torch.zeros(1, device=xi.device)
    _mamba_in_kernel[(triton.cdiv(DI, block_d), B)](
        d, 0, d, d, 0, d, xi, xi.stride(0),
        cs, cs.stride(0), cs.stride(1), cs.stride(2),
        weight, weight.stride(0), weight.stride(2), bias if bias is not None else d,
        xc, xc.stride(0), d, 0, d, 0, d, 0, B, 1, 0.0,
        DM=1, DI=DI, K=K, K_PAD=_next_pow2(K), P=1, P_PAD=1, BLOCK_D=block_d,
        FUSED=False, HAS_B_IN=False, HAS_CONV_B=bias is not None, PDL=False,
    )
    return xc


def ssm_step(
    xc: Tensor,
    z: Tensor,
    dbc: Tensor,
    dt_weight: Tensor,
    dt_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    ssm_state: Tensor,
    *,
    block_d: int = 32,
    rows: int = 2,
) -> Tensor:
    """Triton version of ``ssm_step_reference`` (split-mode ``_mamba_out_kernel``); same contract,
    the output in xc's dtype."""
    require_triton()
    B, DI = xc.shape
    N, R = A_log.shape[1], dt_weight.shape[1]
    ss = ssm_state.transpose(-1, -2)  # (B, N, DI)
    y = torch.empty_like(xc)
    d = torch.zeros(1, device=xc.device)
    _mamba_out_kernel[(triton.cdiv(DI, block_d), triton.cdiv(B, rows))](
        xc, xc.stride(0), z, z.stride(0), dbc, dbc.stride(0),
        dt_weight, dt_weight.stride(0), dt_weight.stride(1), dt_bias,
        A_log, A_log.stride(0), A_log.stride(1), D,
        ss, ss.stride(0), ss.stride(1), ss.stride(2),
        y, y.stride(0), d, 0, d, d, 0, B, rows,
        DI=DI, N=N, N_PAD=_next_pow2(N), R=R, R_PAD=_next_pow2(R), DM=1,
        BLOCK_D=block_d, FUSED=False, HAS_B_OUT=False, PDL=False,
    )
    return y


def layer_step(step: TritonStep, i: int, x: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
    """Fused-mode layer i of ``step``'s model (``_mamba_in_kernel`` + ``_mamba_out_kernel`` with the
    GEMVs inside): x (B, d_model) float32 is advanced in place and returned. States as in
    ``layer_step_reference``. Expects the x_proj accumulator zeroed, which this does."""
    B = x.shape[0]
    dev = x.device
    xc = torch.empty(B, step.DI, device=dev, dtype=torch.float32)
    z = torch.empty_like(xc)
    dbc = torch.zeros(B, step.P, device=dev, dtype=torch.float32)
    step.mamba_in(i, conv=conv_state.transpose(-1, -2), xc=xc, n_rows=B, x=x, z=z, dbc=dbc)
    step.mamba_out(i, xc=xc, z=z, dbc=dbc, ssm=ssm_state.transpose(-1, -2), n_rows=B, x=x)
    return x


# --------------------------------------------------------------------------------------------
# MambaLM.step's entry point for the non-torch backends
# --------------------------------------------------------------------------------------------

_STEPPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {kind: (sig, runner)}


def _cached(model: Any, kind: str, make, replace: bool = False) -> Any:
    """One TritonStep / GraphDecoder per model (dropped with the model: the runners hold its
    parameters, not the model), rebuilt when its parameter tensors were replaced."""
    sig = TritonStep.param_signature(model)
    per_model = _STEPPERS.setdefault(model, {})
    entry = per_model.get(kind)
    if replace or entry is None or entry[0] != sig:
        entry = per_model[kind] = (sig, make())
    return entry[1]


def decode_step(model: Any, token_ids: Tensor, state: Any, backend: str = "triton") -> Tensor:
    """``MambaLM.step`` through ``backend`` ("triton": the kernels launched one by one; "graph":
    the whole step replayed from a CUDA graph of the batch's bucket). Returns float32 logits (B, V);
    the state is advanced in place. The "graph" backend copies the state in and out of its static
    buffers unless the state came from ``GraphDecoder.allocate_state`` (see ssmagent.kernels.graph)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "torch":
        return model.step(token_ids, state, backend="torch")
    with torch.no_grad():
        if backend == "triton":
            stepper = _cached(model, "triton", lambda: TritonStep(model))
            tokens = token_ids.to(stepper.device, torch.long)
            logits, _ = stepper.run(tokens, state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2))
            return logits
        from ssmagent.kernels.graph import GraphDecoder

        batch = state.batch_size
        dec = _cached(model, "graph", lambda: GraphDecoder(model, max_batch=max(batch, 1)))
        if batch > dec.max_batch:  # a larger batch than any before: a decoder with room for it
            dec = _cached(model, "graph", lambda: GraphDecoder(model, max_batch=batch), replace=True)
        return dec.step(token_ids, state).clone()
