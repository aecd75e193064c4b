"""Benchmarks that run as library functions (the CLI's ``ssmagent bench`` prints them).

``ssmagent.bench.decode``: decode speed of our graph, Triton and eager paths, of transformers and
of a Transformer with a KV cache, against the memory-bandwidth roofline.
``ssmagent.bench.memory``: peak GPU memory while decoding after 1K … 1M tokens, Mamba vs that
Transformer. ``ssmagent.bench.scan``: the selective scan's forward and backward, torch vs Triton
vs mamba-ssm, against the roofline. ``ssmagent.bench.kv_transformer``: the Transformer peer they
share. All import only torch.
"""


def fmt(value, spec: str) -> str:
    """``value`` formatted by ``spec``, or "—" for a measurement that was not made (None): the
    tables of every bench, and of ``benchmarks/tables.py``, which must run without torch."""
    return "—" if value is None else format(value, spec)
