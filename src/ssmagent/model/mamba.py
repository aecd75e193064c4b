"""Mamba-1, in one file: the model that explains itself by being it.

Why this file exists
--------------------
The policy of ``ssmagent`` is a Mamba language model (Gu & Dao, 2023, "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces"). What makes it the right policy for tool use over very long
episodes is its *fixed-size state*: generating the next token costs the same time and memory at
token 10 as at token 1,000,000. This file is the reference PyTorch implementation of that model:

* ``MambaLM.forward`` runs a whole sequence at once (teacher-forced training, prompt prefill),
  with a chunked selective scan that is fast on a 2-core CPU, forward and backward.
* ``MambaLM.step`` advances a ``DecodeState`` by one token (rollouts), in place, with a handful
  of small tensor ops per layer and no allocations that grow with the episode.
* Parameter names are exactly those of ``transformers.MambaForCausalLM``, so ``state_dict()`` loads
  into it unchanged: transformers is our independent check of the logits, and export is a save.

It needs nothing but torch (the GPU machine and the ``kernels`` package import it).

The selective state-space model, in the paper's symbols
-------------------------------------------------------
Per channel ``d`` of the expanded stream (``d_inner`` channels) and per state index ``n``
(``d_state`` of them), a layer keeps a hidden state ``h[d, n]`` and, at each time step ``t`` with
input ``x_t[d]``::

    dt_t  = softplus(dt_proj(x_proj(x_t)[:dt_rank]))  (> 0)   step size Δ, input-dependent
    B_t   = x_proj(x_t)[dt_rank : dt_rank + N]                 input matrix, input-dependent
    C_t   = x_proj(x_t)[dt_rank + N :]                         output matrix, input-dependent
    A     = -exp(A_log)                          (< 0)  state matrix (diagonal), input-independent
    h_t   = exp(dt_t A) * h_{t-1} + dt_t B_t x_t          zero-order-hold A, Euler B ("discretised")
    y_t   = C_t · h_t + D x_t                              D is a skip connection

``exp(dt_t A)`` lies in (0, 1): each state channel forgets at a rate the *input* chooses (a large
``dt`` resets and writes, a small one keeps the past). That selectivity is what lets a model with a
fixed-size state decide what to remember. ``1 / (dt |A|)`` is a channel's memory in tokens, which
is why the initial range of ``dt`` (``dt_min``, ``dt_max``) is a knob worth turning (see
``MambaConfig``).

A layer (``MambaBlock``) is ``x + out_proj(SSM(SiLU(conv(in_x))) * SiLU(z))`` on the RMS-normed
``x``, where ``in_proj`` makes ``(in_x, z)``, and ``conv`` is a causal depthwise convolution over
the last ``d_conv`` time steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# On CPU, the states of slowly-forgetting channels decay towards zero and become *denormal*
# floats (below ~1.2e-38), which x86 CPUs process 30-100x slower than normal ones: a training step
# took 7-20 s instead of 0.25 s and decode steps slowed 30-80x. Flushing denormals to zero changes
# nothing measurable (they are < 1e-38) and removes the cliff. It is a per-thread CPU flag that
# threads created afterwards inherit, so we set it as early as possible: here, at import, and again
# whenever a model is built (``MambaLM.__init__``). It returns False (and does nothing) where the
# CPU has no such mode.
torch.set_flush_denormal(True)

LOG2E = math.log2(math.e)  # exp(v) == exp2(v * LOG2E); exp2 is ~4x faster than exp on our CPUs


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class MambaConfig:
    """Architecture of a Mamba language model (and its initialisation of ``dt``).

    ``dt_min``/``dt_max``: the initial step sizes ``dt`` of each channel are drawn log-uniformly in
    this range (``dt_proj.bias`` = softplus⁻¹ of the draw). Mamba's default [0.001, 0.1] gives many
    channels a memory of hundreds of tokens; for tool-use algorithms with a short locality window,
    a short-memory init such as [0.05, 0.5] made length generalisation robust (DESIGN §7).
    """

    vocab_size: int
    d_model: int
    n_layer: int
    d_state: int = 16  # N: size of the state per channel
    d_conv: int = 4  # width of the causal depthwise convolution
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int = 0  # rank of the dt projection; 0 = auto, ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # bias in in_proj and out_proj
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # lm_head shares the embedding matrix

    def __post_init__(self) -> None:
        if self.dt_rank == 0:
            self.dt_rank = math.ceil(self.d_model / 16)
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive integer, got {value!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"MambaConfig needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if self.dt_init_floor <= 0 or self.norm_eps <= 0:
            raise ValueError("MambaConfig.dt_init_floor and norm_eps must be positive")

    @property
    def d_inner(self) -> int:
        """Width of the expanded stream inside a block (``expand * d_model``)."""
        return self.expand * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MambaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MambaConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> MambaConfig:
        """A named architecture: ``tiny`` (CPU, 2 layers, d_model 64) or ``paper-130m``."""
        if name not in PRESETS:
            raise ValueError(f"unknown model config {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

    def to_hf_config(self) -> Any:
        """The same architecture as a ``transformers.MambaConfig`` (imports transformers)."""
        import transformers

        return transformers.MambaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.d_model,
            state_size=self.d_state,
            num_hidden_layers=self.n_layer,
            layer_norm_epsilon=self.norm_eps,
            expand=self.expand,
            conv_kernel=self.d_conv,
            use_bias=self.bias,
            use_conv_bias=self.conv_bias,
            hidden_act="silu",
            residual_in_fp32=True,
            time_step_rank=self.dt_rank,
            time_step_scale=1.0,
            time_step_min=self.dt_min,
            time_step_max=self.dt_max,
            time_step_floor=self.dt_init_floor,
            time_step_init_scheme="random",
            rescale_prenorm_residual=True,
            tie_word_embeddings=self.tie_embeddings,
            initializer_range=0.02,
        )


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_layer": 2, "d_model": 64, "d_state": 16},  # ~70k params with a ~60-token vocab
    "paper-130m": {"n_layer": 24, "d_model": 768, "d_state": 16},  # the paper's Mamba-130M shape
}


# --------------------------------------------------------------------------------------------
# The selective scan: reference loop and the fast chunked version
# --------------------------------------------------------------------------------------------


def selective_scan_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The selective scan as the paper writes it: one time step after another.

    x, dt: (b, l, d_in); A: (d_in, N); B, C: (b, l, N); D: (d_in,); h0: (b, d_in, N).
    Returns y (b, l, d_in) and the last state h_l (b, d_in, N). Readable, differentiable, slow:
    the truth that ``selective_scan`` is tested against.
    """
    b, l, d_in = x.shape
    h = x.new_zeros(b, d_in, A.shape[1]) if h0 is None else h0  # (b, d_in, N)
    ys = []
    for t in range(l):
        dA = torch.exp(dt[:, t, :, None] * A)  # (b, d_in, N)   exp(Δ A), in (0, 1)
        dBx = (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]  # (b, d_in, N)   Δ B x
        h = dA * h + dBx  # (b, d_in, N)
        ys.append((h * C[:, t, None, :]).sum(-1))  # (b, d_in)   C · h
    y = torch.stack(ys, dim=1)  # (b, l, d_in)
    if D is not None:
        y = y + x * D
    return y, h


SCAN_BACKENDS = ("torch", "triton")


@dataclass(frozen=True)
class ScanOptions:
    """How a full-sequence pass runs the selective scan: ``backend`` "torch" (the chunked scan
    below, any device) or "triton" (``ssmagent.kernels.scan``, GPU); ``chunk_size`` for torch."""

    backend: str = "torch"
    chunk_size: int = 8


class _ChunkedSelectiveScan(torch.autograd.Function):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t; y_t = C_t · h_t, with a hand-written backward.

    Why not let autograd differentiate a loop: a Python loop that slices ``x[:, t]`` makes
    autograd's backward ~30x slower (each slice's gradient is a full-size scatter). Instead:

    * Time is cut into chunks of ``T`` steps. Within a chunk all the (T, b, N, d_in) tensors
      (``exp(dt A)``, ``dt B x``, the states) are made by a few big vectorised ops and stay in the
      CPU cache; the recurrence itself is T in-place ``addcmul``s on (b, N, d_in) slices.
    * Forward keeps only the state at the start of each chunk. Backward walks the chunks in
      reverse, recomputes that chunk's states from its start state, runs the adjoint recurrence
      ``G_t = C_t gy_t + exp(dt_{t+1} A) G_{t+1}`` (G = dLoss/dh_t) and turns G into the
      gradients of x, dt, A, B, C with vectorised ops.
    * The chunk-sized work tensors are allocated once per call and reused (``out=``): fresh
      multi-megabyte allocations are page-faulted in on first touch, which cost more than the
      arithmetic.

    Every exp is of a non-positive number (dt > 0, A < 0), so nothing overflows, and the result
    equals the sequential recurrence up to float rounding. (A closed-form chunk, as in Mamba-2's
    SSD, needs a (T, T) decay matrix per (d_in, N) pair in Mamba-1: T times the exps, and exp is
    the dominant cost here.)

    Inside, tensors are time-major with d_in innermost: (t, b, N, d_in). Sums over N then run over
    an outer dimension, which CPUs vectorise well; with N innermost (16 floats) they are 2-5x slower.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, chunk: int):  # type: ignore[override]
        # x, dt: (b, l, d); A: (d, N); B, C: (b, l, N); h0: (b, d, N) or None
        b, l, d = x.shape
        N = A.shape[1]
        T = max(1, min(chunk, l))
        xT = x.transpose(0, 1).contiguous()  # (l, b, d)
        dtT = dt.transpose(0, 1).contiguous()  # (l, b, d)
        dtxT = dtT * xT  # (l, b, d)   dt x
        BT = B.transpose(0, 1).contiguous()  # (l, b, N)
        CT = C.transpose(0, 1).contiguous()  # (l, b, N)
        A2T = (A * LOG2E).t().contiguous()  # (N, d)   exp(dt A) = exp2(dt A log2 e)
        n_chunks = -(-l // T)
        starts = x.new_empty(n_chunks, b, N, d)  # the state before each chunk
        if h0 is None:
            starts[0].zero_()
        else:
            starts[0].copy_(h0.transpose(1, 2))
        ws = _Workspace(T, b, N, d, x)
        y = x.new_empty(l, b, d)  # (l, b, d)
        for c in range(n_chunks):
            s, e = c * T, min(l, (c + 1) * T)
            t = e - s
            hbuf = ws.states(dtT[s:e], dtxT[s:e], A2T, BT[s:e], starts[c])  # (t+1, b, N, d)
            # y_t = C_t · h_t: a (1, N) @ (N, d) product per (t, b)
            torch.bmm(CT[s:e].view(t * b, 1, N), hbuf[1:].view(t * b, N, d), out=y[s:e].view(t * b, 1, d))
            if c + 1 < n_chunks:
                starts[c + 1].copy_(hbuf[t])
            else:
                h_last = hbuf[t].clone()  # (b, N, d)
        ctx.set_materialize_grads(False)  # unused outputs get None gradients, not zeros
        ctx.save_for_backward(xT, dtT, dtxT, A, BT, CT, starts)
        ctx.chunk = T
        ctx.has_h0 = h0 is not None
        return y.transpose(0, 1), h_last.transpose(1, 2)  # (b, l, d), (b, d, N)

    @staticmethod
    def backward(ctx, gy, gh_last):  # type: ignore[override]
        xT, dtT, dtxT, A, BT, CT, starts = ctx.saved_tensors
        T = ctx.chunk
        l, b, d = xT.shape
        N = A.shape[1]
        A2T = (A * LOG2E).t().contiguous()  # (N, d)
        AT = A.t().contiguous()  # (N, d)
        if gy is None:
            gy = xT.new_zeros(b, l, d)
        gyT = gy.transpose(0, 1).contiguous()  # (l, b, d)
        gxT = torch.empty_like(xT)
        gdtT = torch.empty_like(dtT)
        gBT = torch.empty_like(BT)
        gCT = torch.empty_like(CT)
        gAT = A.new_zeros(N, d)  # (N, d)
        # carry = dL/dh_{e-1} arriving from the future (the chunk after this one): exp(dt_e A) G_e
        carry = xT.new_zeros(b, N, d)
        if gh_last is not None:
            carry.copy_(gh_last.transpose(1, 2))
        ws = _Workspace(T, b, N, d, xT)
        for c in reversed(range(starts.shape[0])):
            s, e = c * T, min(l, (c + 1) * T)
            t = e - s
            xc, dtc, dtxc, Bc, Cc, gyc = xT[s:e], dtT[s:e], dtxT[s:e], BT[s:e], CT[s:e], gyT[s:e]
            hbuf = ws.states(dtc, dtxc, A2T, Bc, starts[c])  # (t+1, b, N, d)   h_{s-1} .. h_{e-1}
            dA, G, tmp = ws.dA[:t], ws.G[:t], ws.tmp[:t]  # (t, b, N, d) each
            # G_t = dL/dh_t: from y_t directly, plus through h_{t+1} = exp(dt_{t+1} A) h_t + ...
            torch.mul(Cc[..., None], gyc[:, :, None, :], out=G)
            G[t - 1] += carry
            g_, dA_ = G.unbind(0), dA.unbind(0)  # views, made once (indexing costs µs per call)
            for i in range(t - 2, -1, -1):
                g_[i].addcmul_(dA_[i + 1], g_[i + 1])
            torch.mul(G, dA, out=tmp)  # dL/dh_{t-1} through step t ...
            carry.copy_(tmp[0])  # ... which for the chunk's first step goes to the previous chunk
            ga = tmp.mul_(hbuf[:t])  # (t, b, N, d)   dL/d(dt A) = G exp(dt A) h_{t-1}
            work = dA  # dA is no longer needed: reuse its memory
            torch.sum(torch.mul(hbuf[1:], gyc[:, :, None, :], out=work), -1, out=gCT[s:e])  # (t, b, N)
            gAT += torch.mul(ga, dtc[:, :, None, :], out=work).sum((0, 1))  # (N, d)
            torch.sum(torch.mul(G, dtxc[:, :, None, :], out=work), -1, out=gBT[s:e])  # (t, b, N)
            g_dtx = gxT[s:e]  # (t, b, d)   dL/d(dt x), stored where gx goes
            torch.bmm(Bc.view(t * b, 1, N), G.view(t * b, N, d), out=g_dtx.view(t * b, 1, d))
            torch.sum(torch.mul(ga, AT, out=work), 2, out=gdtT[s:e])  # (t, b, d)   through dt A
            gdtT[s:e].addcmul_(g_dtx, xc)  # ... plus through dt x
            g_dtx.mul_(dtc)  # (t, b, d)   gx = dL/d(dt x) dt
        gh0 = carry.transpose(1, 2) if ctx.has_h0 else None
        return (
            gxT.transpose(0, 1),
            gdtT.transpose(0, 1),
            gAT.t(),
            gBT.transpose(0, 1),
            gCT.transpose(0, 1),
            gh0,
            None,
        )


class _Workspace:
    """Chunk-sized buffers for the scan, reused across chunks (see _ChunkedSelectiveScan)."""

    def __init__(self, T: int, b: int, N: int, d: int, like: Tensor) -> None:
        self.hbuf = like.new_empty(T + 1, b, N, d)  # states: before the chunk, then after each step
        self.dA = like.new_empty(T, b, N, d)  # exp(dt A)
        self.G = like.new_empty(T, b, N, d)  # backward only
        self.tmp = like.new_empty(T, b, N, d)  # backward only

    def states(self, dtc: Tensor, dtxc: Tensor, A2T: Tensor, Bc: Tensor, h: Tensor) -> Tensor:
        """hbuf[0] = h (the state before the chunk), hbuf[i+1] = the state after step i; also
        leaves exp(dt A) in self.dA. dtc, dtxc: (t, b, d); A2T: (N, d); Bc: (t, b, N); h: (b, N, d)."""
        t = dtc.shape[0]
        hbuf, dA = self.hbuf[: t + 1], self.dA[:t]
        torch.exp2(torch.mul(dtc[:, :, None, :], A2T, out=dA), out=dA)  # (t, b, N, d)   exp(dt A)
        hbuf[0].copy_(h)
        torch.mul(Bc[..., None], dtxc[:, :, None, :], out=hbuf[1:])  # (t, b, N, d)   dt B x
        h_, dA_ = hbuf.unbind(0), dA.unbind(0)  # views, made once (indexing costs µs per call)
        for i in range(t):
            h_[i + 1].addcmul_(dA_[i], h_[i])  # h_i = exp(dt_i A) h_{i-1} + dt_i B_i x_i
        return hbuf


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    chunk_size: int = 8,
    backend: str = "torch",
) -> tuple[Tensor, Tensor]:
    """Same contract as ``selective_scan_reference``, fast: chunked, with a hand-written backward.

    x, dt: (b, l, d_in); A: (d_in, N); B, C: (b, l, N); D: (d_in,); h0: (b, d_in, N) or None.
    Returns y (b, l, d_in) (with the D skip when D is given) and h_l (b, d_in, N), in float32 (or
    float64 for float64 inputs). Differentiable in all of them. ``chunk_size`` only trades cache
    use against Python overhead: 8 was fastest on a 2-core CPU for b=32, d_in=128. ``backend``
    "triton" runs ``ssmagent.kernels.scan`` instead (one kernel launch per direction: the GPU
    path; float32 only).
    """
    if backend not in SCAN_BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of: {', '.join(SCAN_BACKENDS)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (v.to(dtype) for v in (x, dt, A, B, C))
    h0 = None if h0 is None else h0.to(dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):  # the state stays float32 under AMP
        if backend == "triton":
            from ssmagent.kernels.scan import TritonSelectiveScan

            y, h = TritonSelectiveScan.apply(x, dt, A, B, C, h0)
        else:
            y, h = _ChunkedSelectiveScan.apply(x, dt, A, B, C, h0, int(chunk_size))
    if D is not None:
        y = y + x * D.to(dtype)
    return y, h


# --------------------------------------------------------------------------------------------
# Decode state
# --------------------------------------------------------------------------------------------


@dataclass
class DecodeState:
    """Everything a model remembers between decode steps: constant size, whatever the length.

    conv_state: (n_layer, B, d_inner, d_conv) — the last ``d_conv`` inputs of each conv (newest last).
    ssm_state:  (n_layer, B, d_inner, d_state) — h, float32.

    ``conv_state[i]`` / ``ssm_state[i]`` are layer i's states, with the shapes and meaning of
    transformers' Mamba cache. Memory layout: ``MambaLM.allocate_state`` stores both with d_inner
    as the innermost (fastest) dimension, i.e. as transposed views, because the decode step's sums
    over d_state and d_conv are 3-6x faster that way on CPU. Any layout works in ``step``; call
    ``.contiguous()`` on a state if you need row-major memory. All updates are in place.
    """

    conv_state: Tensor
    ssm_state: Tensor

    @property
    def batch_size(self) -> int:
        return self.ssm_state.shape[1]

    def nbytes(self) -> int:
        """Total bytes of all states (n_layer·B·d_inner·(d_conv·itemsize + d_state·4))."""
        return sum(t.numel() * t.element_size() for t in (self.conv_state, self.ssm_state))

    def _rows(self, rows: Tensor | Sequence[int]) -> Tensor:
        idx = torch.as_tensor(rows, device=self.ssm_state.device)
        if idx.dtype == torch.bool:
            if idx.shape != (self.batch_size,):
                raise ValueError(f"row mask has shape {tuple(idx.shape)}, expected ({self.batch_size},)")
            idx = idx.nonzero().flatten()
        return idx.to(torch.long).flatten()

    def reset_rows(self, rows: Tensor | Sequence[int]) -> DecodeState:
        """Zero the states of these batch rows (indices or a bool mask), in place: a fresh episode
        can then start in that slot while the other rows go on. Returns self."""
        idx = self._rows(rows)
        if idx.numel():
            self.conv_state.index_fill_(1, idx, 0)
            self.ssm_state.index_fill_(1, idx, 0)
        return self

    def select_rows(self, index: Tensor | Sequence[int]) -> DecodeState:
        """A new state holding only these rows, in this order (indices or a bool mask): shrink a
        batch when episodes end. Keeps the memory layout."""
        idx = self._rows(index)
        return DecodeState(
            conv_state=_select_keep_layout(self.conv_state, idx),
            ssm_state=_select_keep_layout(self.ssm_state, idx),
        )

    def clone(self) -> DecodeState:
        return self.select_rows(torch.arange(self.batch_size, device=self.ssm_state.device))


def _select_keep_layout(t: Tensor, idx: Tensor) -> Tensor:
    # index_select on the (…, last two swapped) view keeps a transposed layout transposed
    return t.transpose(-1, -2).index_select(1, idx).transpose(-1, -2)


# --------------------------------------------------------------------------------------------
# Modules (names match transformers.MambaForCausalLM)
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, computed in float32."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(self.weight.dtype)


class MambaMixer(nn.Module):
    """The Mamba mixer: in_proj → causal depthwise conv → SiLU → selective SSM → gate → out_proj."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_in, bias=cfg.bias)  # -> (x, z)
        self.conv1d = nn.Conv1d(
            d_in, d_in, kernel_size=cfg.d_conv, groups=d_in, padding=cfg.d_conv - 1, bias=cfg.conv_bias
        )  # depthwise: each channel convolved with its own d_conv taps
        self.x_proj = nn.Linear(d_in, R + 2 * N, bias=False)  # -> (dt_low, B, C)
        self.dt_proj = nn.Linear(R, d_in, bias=True)  # dt_low -> dt (before softplus)
        self.A_log = nn.Parameter(torch.empty(d_in, N))  # A = -exp(A_log)
        self.D = nn.Parameter(torch.empty(d_in))
        self.out_proj = nn.Linear(d_in, cfg.d_model, bias=cfg.bias)

    def forward(self, u: Tensor, state: tuple[Tensor, Tensor] | None = None, scan: ScanOptions = ScanOptions()) -> Tensor:
        """u: (b, l, d_model) -> (b, l, d_model). With ``state`` = (conv_state (b, d_in, d_conv),
        ssm_state (b, d_in, N)) the sequence continues from it and the states are updated in place."""
        cfg = self.cfg
        b, l, _ = u.shape
        K, N, R = cfg.d_conv, cfg.d_state, cfg.dt_rank
        xz = self.in_proj(u)  # (b, l, 2 d_in)
        x, z = xz.chunk(2, dim=-1)  # (b, l, d_in) each
        # causal depthwise conv over time: y_t = bias + sum_k w_k x_{t-K+1+k}
        xc = x.transpose(1, 2)  # (b, d_in, l)
        if state is None:
            xc = self.conv1d(xc)[..., :l]  # left zero-padding of K-1 → causal
        else:
            conv_state = state[0]
            full = torch.cat([conv_state.to(xc.dtype), xc], dim=-1)  # (b, d_in, K + l)
            conv_state.copy_(full[..., -K:].detach())  # the last K inputs
            xc = F.conv1d(full[..., 1:], self.conv1d.weight, self.conv1d.bias, groups=cfg.d_inner)  # (b, d_in, l)
        x = F.silu(xc.transpose(1, 2))  # (b, l, d_in)
        dt_low, Bm, Cm = self.x_proj(x).split([R, N, N], dim=-1)  # (b, l, R), (b, l, N), (b, l, N)
        dt = F.softplus(self.dt_proj(dt_low))  # (b, l, d_in)   Δ > 0
        A = -torch.exp(self.A_log.float())  # (d_in, N)   < 0
        h0 = None if state is None else state[1]
        y, h = selective_scan(x, dt, A, Bm, Cm, self.D, h0=h0, chunk_size=scan.chunk_size, backend=scan.backend)
        if state is not None:
            state[1].copy_(h.detach())
        y = y.to(u.dtype) * F.silu(z)  # (b, l, d_in)   gate
        return self.out_proj(y)  # (b, l, d_model)


class MambaBlock(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), the residual stream kept in float32."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mixer = MambaMixer(cfg)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, scan: ScanOptions = ScanOptions()) -> Tensor:
        residual = x.float()  # (b, l, d_model)
        h = self.norm(x.to(self.norm.weight.dtype))
        return residual + self.mixer(h, state, scan)


class MambaBackbone(nn.Module):
    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList([MambaBlock(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class MambaLM(nn.Module):
    """A Mamba language model: ``forward`` for whole sequences, ``step`` for constant-memory decoding.

    ``state_dict()`` has the keys of ``transformers.MambaForCausalLM`` (with ``lm_head.weight``
    the embedding matrix itself when ``tie_embeddings``).
    """

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        torch.set_flush_denormal(True)  # see the comment at the top of this module
        self.cfg = cfg
        self.backbone = MambaBackbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.scan = ScanOptions()  # how ``forward`` runs the selective scan (training, prefill)
        self._decode_cache: tuple | None = None  # see _decode_params
        # which implementation ``step`` uses: "torch" (below), or "triton" / "graph" (the GPU
        # kernels of ssmagent.kernels, imported only when chosen)
        self.decode_backend = "torch"
        self.reset_parameters()

    @property
    def config(self) -> MambaConfig:
        return self.cfg

    # ---------------------------------------------------------------- initialisation
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba's initialisation (as mamba-ssm and transformers do it); deterministic given
        ``torch.manual_seed``."""
        cfg = self.cfg
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        if not cfg.tie_embeddings:
            self.lm_head.reset_parameters()
        for block in self.backbone.layers:
            block.norm.weight.fill_(1.0)
            m = block.mixer
            m.in_proj.reset_parameters()
            m.conv1d.reset_parameters()
            m.x_proj.reset_parameters()
            # out_proj: default init scaled by 1/sqrt(n_layer), as GPT-2 and Mamba do, so the
            # residual stream's variance does not grow with depth
            m.out_proj.reset_parameters()
            m.out_proj.weight /= math.sqrt(cfg.n_layer)
            for lin in (m.in_proj, m.out_proj):
                if lin.bias is not None:
                    lin.bias.zero_()
            # S4D-real: A[:, n] = -(n + 1) for every channel, so the N states of a channel
            # forget at N different rates
            A = torch.arange(1, cfg.d_state + 1, dtype=torch.float32).repeat(cfg.d_inner, 1)  # (d_in, N)
            m.A_log.copy_(torch.log(A))
            m.D.fill_(1.0)
            # dt = softplus(dt_proj(.)): weight small, bias so that softplus(bias) = dt0 with
            # dt0 log-uniform in [dt_min, dt_max] (clamped below at dt_init_floor)
            std = cfg.dt_rank**-0.5
            nn.init.uniform_(m.dt_proj.weight, -std, std)
            dt0 = torch.exp(
                torch.rand(cfg.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
            ).clamp(min=cfg.dt_init_floor)
            m.dt_proj.bias.copy_(dt0 + torch.log(-torch.expm1(-dt0)))  # softplus⁻¹(dt0)
        self.backbone.norm_f.weight.fill_(1.0)

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied lm_head counts once)."""
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- full sequences
    def forward(self, input_ids: Tensor, state: DecodeState | None = None) -> Tensor:
        """input_ids: (B, L) -> logits (B, L, V). With ``state`` the sequence continues from it and
        the state is left after the last token (see ``prefill``)."""
        x = self.backbone.embeddings(input_ids)  # (B, L, d_model)
        for i, layer in enumerate(self.backbone.layers):
            layer_state = None if state is None else (state.conv_state[i], state.ssm_state[i])
            x = layer(x, layer_state, self.scan)  # (B, L, d_model), float32
        x = self.backbone.norm_f(x.to(self.backbone.norm_f.weight.dtype))
        return self.lm_head(x)  # (B, L, V)

    def prefill(self, input_ids: Tensor, state: DecodeState) -> Tensor:
        """Feed a whole prompt (B, L) from ``state`` in one pass: returns its logits (B, L, V) and
        leaves in ``state`` what L calls to ``step`` would have left."""
        if input_ids.dim() != 2 or input_ids.shape[0] != state.batch_size:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected ({state.batch_size}, L)")
        if input_ids.shape[1] == 0:
            return self.lm_head.weight.new_zeros(state.batch_size, 0, self.cfg.vocab_size)
        with torch.no_grad():
            return self.forward(input_ids, state)

    # ---------------------------------------------------------------- decoding
    def allocate_state(self, batch_size: int, device: torch.device | str | None = None) -> DecodeState:
        """A zero state (the state before any token) for ``batch_size`` rows."""
        cfg = self.cfg
        p = self.backbone.embeddings.weight
        device = p.device if device is None else torch.device(device)
        L, d_in = cfg.n_layer, cfg.d_inner
        conv = torch.zeros(L, batch_size, cfg.d_conv, d_in, device=device, dtype=p.dtype)
        ssm = torch.zeros(L, batch_size, cfg.d_state, d_in, device=device, dtype=torch.float32)
        # d_inner innermost in memory, (…, d_inner, ·) in shape: see DecodeState
        return DecodeState(conv_state=conv.transpose(-1, -2), ssm_state=ssm.transpose(-1, -2))

    # The decode step is ~30 tiny ops per layer, so at batch 1 its time is per-op overhead (1-3 µs
    # each on our CPUs), not arithmetic. Hence: weights are prepared once (norm weights folded
    # into the next projection, A = -exp(A_log) precomputed, layouts made contiguous), no Python
    # scalars in the hot path (a tensor op with a Python float costs 2x one without), and the
    # states are updated in place. The cache is keyed on the parameters' version counters, which
    # every in-place change (optimizer step, load_state_dict, ...) bumps.

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .float(), ...: new tensors
        self._decode_cache = None
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):  # may replace Parameter objects (assign=True)
        self._decode_cache = None
        return super().load_state_dict(*args, **kwargs)

    def _decode_params(self) -> tuple[list[tuple], Tensor, Tensor]:
        """(per-layer tensors for ``step``, lm_head weight with norm_f folded in, d·eps), cached."""
        cache = self._decode_cache
        if cache is not None:
            params, key, prepared = cache
            if key is not None and key == _versions(params):
                return prepared
        params = list(self.parameters())
        cfg = self.cfg
        scale = math.sqrt(cfg.d_model)  # rms(x) = |x| / sqrt(d): fold sqrt(d) into the weights
        layers = []

        def f32(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().float()

        with torch.no_grad():
            for block in self.backbone.layers:
                m = block.mixer
                layers.append(
                    (
                        f32(m.in_proj.weight) * (f32(block.norm.weight) * scale),  # (2 d_in, d_model)
                        f32(m.in_proj.bias),
                        torch.full((1,), cfg.d_model * cfg.norm_eps, device=m.D.device),  # d·eps
                        f32(m.conv1d.weight[:, 0, :]).t().contiguous().unbind(0),  # K taps (d_in,)
                        f32(m.conv1d.bias),
                        f32(m.x_proj.weight),  # (R + 2N, d_in)
                        f32(m.dt_proj.weight),  # (d_in, R)
                        f32(m.dt_proj.bias),  # (d_in,)
                        (-torch.exp(f32(m.A_log)) * LOG2E).t().contiguous(),  # (N, d_in)   A log2 e
                        f32(m.D),  # (d_in,)
                        f32(m.out_proj.weight).t().contiguous(),  # (d_in, d_model)
                        f32(m.out_proj.bias),
                    )
                )
            head = f32(self.lm_head.weight) * (f32(self.backbone.norm_f.weight) * scale)  # (V, d_model)
            d_eps = torch.full((1,), cfg.d_model * cfg.norm_eps, device=head.device)
        prepared = (layers, head, d_eps)
        self._decode_cache = (params, _versions(params), prepared)
        return prepared

    def step(self, token_ids: Tensor, state: DecodeState, backend: str | None = None) -> Tensor:
        """One decode step: token_ids (B,) -> logits (B, V) (float32); ``state`` is updated in place.

        Equals ``forward`` on the whole sequence so far (to float rounding). Call it under
        ``torch.inference_mode()``; it never builds an autograd graph either way. ``backend``
        (default ``self.decode_backend``): "torch", or "triton"/"graph" (ssmagent.kernels).
        """
        if token_ids.shape != (state.ssm_state.shape[1],):
            raise ValueError(f"token_ids has shape {tuple(token_ids.shape)}, expected ({state.batch_size},)")
        backend = self.decode_backend if backend is None else backend
        if backend != "torch":
            from ssmagent.kernels.decode import decode_step

            return decode_step(self, token_ids, state, backend=backend)
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._step(token_ids, state)
        return self._step(token_ids, state)

    def _step(self, token_ids: Tensor, state: DecodeState) -> Tensor:
        N, R, d_in, K = self.cfg.d_state, self.cfg.dt_rank, self.cfg.d_inner, self.cfg.d_conv
        layers, head, d_eps = self._decode_params()
        conv_all = state.conv_state.transpose(-1, -2)  # (n_layer, B, K, d_in)
        ssm_all = state.ssm_state.transpose(-1, -2)  # (n_layer, B, N, d_in)
        x = F.embedding(token_ids, self.backbone.embeddings.weight).float()  # (B, d_model) residual
        for i, (w_in, b_in, eps, conv_w, conv_b, w_x, w_dt, b_dt, A2T, D, w_outT, b_out) in enumerate(layers):
            cs, h = conv_all[i], ssm_all[i]  # (B, K, d_in), (B, N, d_in)
            r = torch.rsqrt(torch.linalg.vecdot(x, x).unsqueeze(-1) + eps)  # (B, 1)  sqrt(d)/rms(x)
            xz = F.linear(x * r, w_in, b_in)  # (B, 2 d_in)   in_proj(RMSNorm(x))
            xi, z = xz[:, :d_in], xz[:, d_in:]  # (B, d_in) each
            # causal conv, newest output: b + w_{K-1} x_t + sum_k w_k x_{t-K+1+k} (x from the state)
            taps = cs.unbind(1)  # K views (B, d_in): x_{t-K} .. x_{t-1}
            xc = xi * conv_w[-1] if conv_b is None else torch.addcmul(conv_b, xi, conv_w[-1])  # (B, d_in)
            for k in range(K - 1):
                xc.addcmul_(taps[k + 1], conv_w[k])
            for k in range(K - 1):  # shift the window by one (front to back: each copy reads
                taps[k].copy_(taps[k + 1])  # a slot before it is overwritten)
            taps[-1].copy_(xi)
            xc = F.silu(xc)  # (B, d_in)
            dbc = F.linear(xc, w_x)  # (B, R + 2N)
            dt = F.softplus(F.linear(dbc[:, :R], w_dt, b_dt))  # (B, d_in)   Δ
            dA = torch.exp2(dt.unsqueeze(1) * A2T)  # (B, N, d_in)   exp(Δ A)
            h.mul_(dA).addcmul_(dbc[:, R : R + N].unsqueeze(2), (dt * xc).unsqueeze(1))  # h = exp(ΔA) h + Δ B x
            y = torch.bmm(dbc[:, R + N :].unsqueeze(1), h).squeeze(1)  # (B, d_in)   C · h
            y = torch.addcmul(y, xc, D) * F.silu(z)  # (B, d_in)   + D x, then the gate
            if b_out is None:
                x = torch.addmm(x, y, w_outT)  # (B, d_model)   x + out_proj(y)
            else:
                x = torch.addmm(x + b_out, y, w_outT)
        r = torch.rsqrt(torch.linalg.vecdot(x, x).unsqueeze(-1) + d_eps)  # (B, 1)
        return F.linear(x * r, head)  # (B, V)   lm_head(norm_f(x))


def _versions(params: list[Tensor]) -> tuple[int, ...] | None:
    """The parameters' version counters; None for inference tensors (made under inference_mode),
    which have none: then nothing is cached."""
    try:
        return tuple(p._version for p in params)
    except RuntimeError:
        return None
