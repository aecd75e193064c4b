"""Benchmarks that run as library functions (the CLI's ``ssmagent bench`` prints them).

``ssmagent.bench.decode``: decode speed of our graph, Triton and eager paths and of
transformers, against the memory-bandwidth roofline. Imports only torch.
"""
