"""The Transformer-with-KV-cache peer of our Mamba benchmarks (``kv-transformer``).

Mamba's claim is that a decode step costs the same at token 1,000,000 as at token 1; a Transformer's
step reads a KV cache that grows with every token. To show both sides with the same yardstick, the
benchmarks put next to a Mamba config a ``transformers.LlamaForCausalLM`` — a well-kept library's
attention, not ours — of about the same parameter count, vocabulary and dtype, with tied
embeddings, decoding greedily from its ``DynamicCache`` (the cache ``generate`` uses by default).

Its shape (``match_parameters``): the Mamba model's width, so the (tied) embedding matrix is the
same V × d; heads of 64 channels with full multi-head attention (every head keeps its own keys and
values, as in the Pythia / GPT-NeoX models of Mamba's comparisons); a SwiGLU MLP; the depth spends
the parameters the Mamba layers have, and the MLP width fine-tunes the count to within a few
tenths of a percent. For paper-130m (129.1M parameters, vocabulary 50,280) that is 13 layers of
width 768, 12 heads, MLP 2,000.

Its roofline (``LlamaShape.roofline_bytes``) is its own: every weight once (the tied head once)
plus the KV cache the step must read — the context's keys and values and the new token's — and the
new token's keys and values written. ``DynamicCache`` in fact copies the whole cache on every step
(it grows by concatenation); those extra bytes are what it costs, not what a step must move, so the
roofline leaves them out.

Imports only torch at module level; transformers when a model is built. Works with transformers
5.17 (``past_key_values=``) and later (``cache=``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

HEAD_DIM = 64
"""Channels per attention head: the usual choice (GPT-NeoX, Llama) for models of this size."""
TOLERANCE = 0.10
"""How far the peer's parameter count may be from the Mamba model's (a fraction)."""


@dataclass(frozen=True)
class LlamaShape:
    """The architecture numbers of a Llama decoder with tied embeddings and no biases."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_parameters(self) -> int:
        """Embedding (tied head, once) + per layer: q, k, v, o (d × d each), the SwiGLU MLP (3 × d × i)
        and two RMSNorm weights + the final norm."""
        d, i = self.hidden_size, self.intermediate_size
        return self.vocab_size * d + self.num_layers * (4 * d * d + 3 * d * i + 2 * d) + d

    def kv_bytes(self, batch: int, tokens: int, itemsize: int) -> int:
        """Bytes of the keys and values of ``tokens`` tokens in every layer: 2 · L · B · T · d · itemsize."""
        return 2 * self.num_layers * batch * tokens * self.hidden_size * itemsize

    def roofline_bytes(self, batch: int, context: int, itemsize: int) -> int:
        """The fewest bytes one decode step after ``context`` tokens must move: every weight once,
        the keys and values of context + 1 tokens read, the new token's written."""
        weights = self.num_parameters() * itemsize
        return weights + self.kv_bytes(batch, context + 1, itemsize) + self.kv_bytes(batch, 1, itemsize)

    def describe(self) -> str:
        layers = f"{self.num_layers} layer{'s' * (self.num_layers != 1)}"
        heads = f"{self.num_heads} head{'s' * (self.num_heads != 1)}"
        return f"{layers} × {self.hidden_size}, {heads}, MLP {self.intermediate_size}"


def _round8(value: float) -> int:
    return max(8, 8 * round(value / 8))


def match_parameters(target: int, vocab: int, hidden: int, *, head_dim: int = HEAD_DIM, tolerance: float = TOLERANCE) -> LlamaShape:
    """The Llama shape of width ``hidden`` and vocabulary ``vocab`` whose parameter count is nearest
    ``target`` (see the module docstring for why this shape); ValueError when none comes within
    ``tolerance`` (the embedding alone may be larger than the target)."""
    if min(target, vocab, hidden, head_dim) < 1:
        raise ValueError(f"target, vocab, hidden and head_dim must be positive, got {target}, {vocab}, {hidden}, {head_dim}")
    heads = max(1, round(hidden / head_dim))
    while hidden % heads:
        heads -= 1
    attention = 4 * hidden * hidden + 2 * hidden  # q, k, v, o and the layer's two norms
    layer_budget = target - vocab * hidden - hidden  # what the decoder layers may have
    mlp = _round8(8 * hidden / 3)  # SwiGLU's usual width: 3·d·(8d/3) = the 8d² of a 4d GELU MLP
    layers = max(1, round(layer_budget / (attention + 3 * hidden * mlp)))
    mlp = _round8((layer_budget - layers * attention) / (3 * hidden * layers))
    shape = LlamaShape(vocab, hidden, layers, heads, mlp)
    off = abs(shape.num_parameters() - target) / target
    if off > tolerance:
        raise ValueError(
            f"no Llama of width {hidden} and vocabulary {vocab:,} comes within {tolerance:.0%} of {target:,} "
            f"parameters (nearest: {shape.num_parameters():,}; the embedding alone has {vocab * hidden:,})"
        )
    return shape


def shape_for(model: Any) -> LlamaShape:
    """The peer's shape for a ``MambaLM`` (its parameter count, vocabulary and width)."""
    return match_parameters(model.num_parameters(), model.cfg.vocab_size, model.cfg.d_model)


@dataclass
class KVPeer:
    """A ``LlamaForCausalLM`` of a given shape on a device, and how to decode with its KV cache."""

    model: Any  # transformers.LlamaForCausalLM, in eval mode
    shape: LlamaShape
    cache_kwarg: str  # "past_key_values" (e.g. transformers 5.17) or "cache" (its newer name, e.g. 5.24)

    @property
    def device(self) -> torch.device:
        return self.model.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.model.embed_tokens.weight.dtype

    @property
    def itemsize(self) -> int:
        return self.model.model.embed_tokens.weight.element_size()

    def weight_bytes(self) -> int:
        """Bytes of all distinct parameters (the tied head once)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def kv_bytes(self, batch: int, tokens: int) -> int:
        return self.shape.kv_bytes(batch, tokens, self.itemsize)

    def new_cache(self) -> Any:
        """An empty ``DynamicCache``: it grows by one token per decode step."""
        from transformers import DynamicCache

        return DynamicCache()

    def logits(self, input_ids: Tensor, cache: Any) -> Tensor:
        """Feed ``input_ids`` (B, T) after what ``cache`` holds (which grows by T): float32 logits of
        the last position (B, V)."""
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, use_cache=True, **{self.cache_kwarg: cache})
        return out.logits[:, -1].float()

    def greedy_step(self, tokens: Tensor, cache: Any) -> Tensor:
        """Feed ``tokens`` (B, T) and return the greedy next tokens (B,)."""
        return self.logits(tokens, cache).argmax(-1)

    def fill_random(self, cache: Any, batch: int, tokens: int) -> None:
        """Put ``tokens`` tokens of random keys and values of the right shape into every layer of an
        empty ``cache``: the memory of a prefilled cache without the prefill (decoding's memory and
        time do not depend on the values)."""
        s = self.shape
        with torch.inference_mode():
            for layer in range(s.num_layers):
                k, v = (
                    torch.randn(batch, s.num_heads, tokens, s.head_dim, device=self.device, dtype=self.dtype)
                    for _ in range(2)
                )
                cache.update(k, v, layer)
                del k, v


def make_peer(shape: LlamaShape, *, dtype: torch.dtype, device: torch.device | str, max_positions: int = 1 << 21, seed: int = 0) -> KVPeer:
    """Build the ``LlamaForCausalLM`` of ``shape`` with random weights (seeded) on ``device`` in
    ``dtype``; ``max_positions`` bounds the context (RoPE positions)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        rms_norm_eps=1e-5,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    params = inspect.signature(model.forward).parameters
    return KVPeer(model, shape, "cache" if "cache" in params else "past_key_values")


def peer_for(model: Any, *, max_positions: int = 1 << 21) -> KVPeer:
    """The peer of a ``MambaLM``: its shape (``shape_for``), on the model's device, in its dtype."""
    w = model.backbone.embeddings.weight
    return make_peer(shape_for(model), dtype=w.dtype, device=w.device, max_positions=max_positions)


def greedy_decode(peer: KVPeer, prompt: Tensor, steps: int, cache: Any = None) -> tuple[Tensor, Tensor]:
    """Greedy decoding with the KV cache: feed ``prompt`` (B, T) after ``cache`` (a new one when
    None), then ``steps`` - 1 single tokens. Returns the tokens (B, steps) and their float32 logits
    (B, steps, V)."""
    cache = peer.new_cache() if cache is None else cache
    tokens, logits = [], []
    feed = prompt
    for _ in range(steps):
        out = peer.logits(feed, cache)
        logits.append(out)
        tokens.append(out.argmax(-1))
        feed = tokens[-1][:, None]
    return torch.stack(tokens, 1), torch.stack(logits, 1)
