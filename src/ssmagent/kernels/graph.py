"""The whole decode step replayed from CUDA graphs: one graph per batch-size bucket.

A decode step is ~50 kernels (fused mode) to ~150 (split mode) for the paper-130m shape; launched
one by one from Python each costs microseconds of CPU time, more than the GPU needs for it. A CUDA
graph records the launches once and replays them with one call. Graphs read and write fixed
addresses, so everything a step touches lives in static buffers owned by the ``GraphDecoder``:

* the token input ``(max_batch,)`` and the outputs — float32 logits ``(max_batch, V)`` and the
  greedy next tokens ``(max_batch,)``;
* the decode states, one buffer of ``max_batch`` rows shared by all buckets, in
  ``MambaLM.allocate_state``'s layout (d_inner innermost).

A batch of B rows runs the graph of the smallest bucket (1, 2, 4, …, max_batch) that holds it,
on the first rows of those buffers; the rows past B are scratch. Graphs are captured lazily, on a
bucket's first use (or all at once with ``capture_all``).

Use it like ``MambaLM.step``::

    dec = GraphDecoder(model, max_batch=64)
    state = dec.allocate_state(8)              # views of the static state buffers: no copies
    tok = prompt_last_tokens                   # (8,) long
    for _ in range(n):
        tok = dec.greedy(tok, state)           # (8,) next tokens, static buffer

The greedy graph writes its pick straight back into the token input, so feeding ``greedy``'s own
output back in costs no copy. ``step`` returns the logits instead. Both return views of static
buffers that the next call overwrites: ``.clone()`` what you keep. A state that is not from
``allocate_state`` (say, from ``DecodeState.select_rows``) works too: it is copied in before and
out after the replay, and the static rows are put back as they were (slower; ``adopt`` moves a
state into the static buffers once).

Parameters are read in place, so optimizer steps are seen by later replays; moving the model or
replacing its parameter tensors (``.to()``, ``load_state_dict(assign=True)``) needs a new
``GraphDecoder``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssmagent.kernels.decode import KernelConfig, TritonStep, require_triton


def buckets_for(max_batch: int) -> list[int]:
    """1, 2, 4, … up to the first power of two >= max_batch (the last bucket is max_batch)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return out


class GraphDecoder:
    """CUDA-graph decode runner for a ``MambaLM`` on a CUDA device (see the module docstring)."""

    def __init__(self, model: Any, max_batch: int = 256, *, config: KernelConfig | None = None) -> None:
        require_triton()
        p = model.backbone.embeddings.weight
        if p.device.type != "cuda":
            raise RuntimeError("GraphDecoder needs the model on a CUDA device")
        self.device = p.device  # (no reference to the model itself: see decode._cached)
        self.max_batch = int(max_batch)
        self.buckets = buckets_for(self.max_batch)
        self.stepper = TritonStep(model, config)
        cfg = model.cfg
        L, d_in = cfg.n_layer, cfg.d_inner
        dev = self.device
        # normal tensors even when built under inference_mode, so that steps outside it may
        # write them
        with torch.no_grad(), torch.inference_mode(False):
            self._conv = torch.zeros(L, self.max_batch, cfg.d_conv, d_in, device=dev, dtype=p.dtype)
            self._ssm = torch.zeros(L, self.max_batch, cfg.d_state, d_in, device=dev, dtype=torch.float32)
            self._tok = torch.zeros(self.max_batch, device=dev, dtype=torch.long)
            self._next = torch.zeros(self.max_batch, device=dev, dtype=torch.long)
            self._logits = torch.zeros(self.max_batch, cfg.vocab_size, device=dev, dtype=torch.float32)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._pool = None

    # ---------------------------------------------------------------- states
    def bucket_for(self, batch: int) -> int:
        for b in self.buckets:
            if batch <= b:
                return b
        raise ValueError(f"batch {batch} exceeds this GraphDecoder's max_batch {self.max_batch}")

    def allocate_state(self, batch: int):
        """A zero ``DecodeState`` for ``batch`` rows that *is* the static buffers (rows [:batch]).

        One live state per decoder: a second call hands out the same memory again, zeroed."""
        from ssmagent.model.mamba import DecodeState

        self.bucket_for(batch)
        with torch.no_grad():
            self._conv.zero_()
            self._ssm.zero_()
        return DecodeState(
            conv_state=self._conv[:, :batch].transpose(-1, -2),
            ssm_state=self._ssm[:, :batch].transpose(-1, -2),
        )

    def adopt(self, state):
        """Copy ``state`` into the static buffers and return the static-backed state (fast path)."""
        new = self.allocate_state(state.batch_size)
        with torch.no_grad():
            new.conv_state.copy_(state.conv_state)
            new.ssm_state.copy_(state.ssm_state)
        return new

    def _is_static(self, state) -> bool:
        B = state.batch_size
        c, s = state.conv_state, state.ssm_state
        return (
            c.data_ptr() == self._conv.data_ptr()
            and s.data_ptr() == self._ssm.data_ptr()
            and c.shape[0] == self._conv.shape[0]
            and c.stride() == self._conv[:, :B].transpose(-1, -2).stride()
            and s.stride() == self._ssm[:, :B].transpose(-1, -2).stride()
        )

    # ---------------------------------------------------------------- capture
    def _capture(self, bucket: int) -> torch.cuda.CUDAGraph:
        st = self.stepper
        args = dict(
            logits_out=self._logits[:bucket],
            next_out=self._next[:bucket],
            feedback=self._tok[:bucket],
        )
        conv, ssm = self._conv[:, :bucket], self._ssm[:, :bucket]
        # warm-up (compiles the kernels, lets cuBLAS pick its algorithms) runs for real: keep
        # whatever the buffers hold now and put it back afterwards
        buffers = (self._conv, self._ssm, self._tok, self._next, self._logits)
        saved = [t.clone() for t in buffers]
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):
                    st.run(self._tok[:bucket], conv, ssm, **args)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
                st.run(self._tok[:bucket], conv, ssm, **args)
        finally:
            with torch.no_grad():
                for t, s in zip(buffers, saved):
                    t.copy_(s)
        return graph

    def capture_all(self) -> None:
        for b in self.buckets:
            self.graph(b)

    def graph(self, bucket: int) -> torch.cuda.CUDAGraph:
        g = self._graphs.get(bucket)
        if g is None:
            try:
                g = self._capture(bucket)
            except RuntimeError:
                if not self.stepper.launch.pdl:
                    raise
                # a driver/runtime that cannot capture programmatic launches: capture without
                torch.cuda.synchronize(self.device)
                self.stepper.launch.pdl = False
                self._graphs.clear()  # keep every bucket on one launch mode
                g = self._capture(bucket)
            self._graphs[bucket] = g
        return g

    # ---------------------------------------------------------------- stepping
    def _replay(self, token_ids: Tensor, state) -> int:
        B = state.batch_size
        if token_ids.shape != (B,):
            raise ValueError(f"token_ids has shape {tuple(token_ids.shape)}, expected ({B},)")
        bucket = self.bucket_for(B)
        graph = self.graph(bucket)
        if token_ids.data_ptr() != self._next.data_ptr():  # greedy's own output is already in _tok
            self._tok[:B].copy_(token_ids, non_blocking=True)
        if self._is_static(state):
            graph.replay()
            return B
        # a foreign state: run it through the static rows, keeping what they hold (the state
        # that allocate_state handed out may still be live)
        stash = (self._conv[:, :bucket].clone(), self._ssm[:, :bucket].clone())
        self._conv[:, :B].copy_(state.conv_state.transpose(-1, -2))
        self._ssm[:, :B].copy_(state.ssm_state.transpose(-1, -2))
        graph.replay()
        state.conv_state.copy_(self._conv[:, :B].transpose(-1, -2))
        state.ssm_state.copy_(self._ssm[:, :B].transpose(-1, -2))
        self._conv[:, :bucket].copy_(stash[0])
        self._ssm[:, :bucket].copy_(stash[1])
        return B

    def step(self, token_ids: Tensor, state) -> Tensor:
        """One decode step: float32 logits (B, V), a view of a static buffer; state advanced in place."""
        with torch.no_grad():
            B = self._replay(token_ids, state)
        return self._logits[:B]

    def greedy(self, token_ids: Tensor, state) -> Tensor:
        """One decode step with the greedy pick done in the graph: next tokens (B,) long (the first
        argmax of each row's logits), a view of a static buffer; feed it straight back in."""
        with torch.no_grad():
            B = self._replay(token_ids, state)
        return self._next[:B]
