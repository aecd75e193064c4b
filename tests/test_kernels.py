"""GPU decode kernels: each Triton kernel equals its PyTorch reference, the whole Triton / CUDA-graph
step equals ``MambaLM.step``, and the kernels and bench import with torch alone.

Where CUDA is available the kernels are compiled and run on the GPU; elsewhere they run on CPU
tensors in Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest.py before any test imports Triton), on
small shapes. Tests that need triton skip cleanly without it; CUDA-graph tests skip without CUDA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
DEVICE = torch.device("cuda" if CUDA else "cpu")

from ssmagent.model import DecodeState, MambaConfig, MambaLM  # noqa: E402

FP32 = dict(atol=1e-5, rtol=1e-5)
BF16 = dict(atol=2e-2, rtol=2e-2)
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (CUDA graphs)")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def K():
    pytest.importorskip("triton")
    from ssmagent.kernels import decode

    return decode


def make_model(seed: int = 0, dtype=torch.float32, vocab: int = 37, **overrides) -> MambaLM:
    """A small model with every weight perturbed (no parameter at a trivial value); d_model 24
    makes d_inner (48), dt_rank (2) and d_model itself non-powers of two, so masks are exercised."""
    torch.manual_seed(seed)
    cfg = MambaConfig.preset("tiny", vocab, **{"d_model": 24, "dt_min": 0.01, "dt_max": 0.5, **overrides})
    model = MambaLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_((0.3 if name.endswith("A_log") else 0.05) * torch.randn_like(p))
    return model.to(device=DEVICE, dtype=dtype).eval()


def random_state(model: MambaLM, batch: int, seed: int = 1) -> DecodeState:
    """A state in allocate_state's layout holding random values (zeros would hide indexing bugs)."""
    g = torch.Generator().manual_seed(seed)
    state = model.allocate_state(batch)
    state.conv_state.copy_(torch.randn(state.conv_state.shape, generator=g))
    state.ssm_state.copy_(torch.randn(state.ssm_state.shape, generator=g))
    return state


def tol(dtype):
    return FP32 if dtype == torch.float32 else BF16


# ---------------------------------------------------------------------------- import hygiene


def test_kernels_and_bench_import_with_torch_alone(fresh_python):
    """The GPU machine has no gymnasium or docker; CI may lack triton: the model, kernels and bench
    packages must import without them (and without transformers)."""
    code = (
        "import sys\n"
        "for m in ('triton', 'gymnasium', 'docker', 'transformers'): sys.modules[m] = None\n"
        "import ssmagent.model, ssmagent.kernels, ssmagent.kernels.decode as d, ssmagent.kernels.graph, ssmagent.bench.decode\n"
        "assert not d.HAS_TRITON\n"
        "m = ssmagent.model.MambaLM(ssmagent.model.MambaConfig.preset('tiny', 11))\n"
        "s = m.allocate_state(1)\n"
        "import torch\n"
        "m.step(torch.zeros(1, dtype=torch.long), s)\n"
        "try:\n"
        "    m.step(torch.zeros(1, dtype=torch.long), s, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'triton' in str(e)\n"
        "else:\n"
        "    raise AssertionError('triton backend ran without triton')\n"
    )
    fresh_python(code)


def test_unknown_backend_is_rejected():
    pytest.importorskip("triton")
    model = make_model()
    with pytest.raises(ValueError, match="unknown decode backend"):
        model.step(torch.zeros(1, dtype=torch.long, device=DEVICE), model.allocate_state(1), backend="cuda")


# ---------------------------------------------------------------------------- kernel vs reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_kernel_matches_reference_and_shifts_state(K, dtype):
    model = make_model(dtype=dtype)
    m = model.backbone.layers[0].mixer
    B, DI = 3, model.cfg.d_inner
    xi = torch.randn(B, DI, device=DEVICE).to(dtype)
    ref_state = random_state(model, B).conv_state[0]
    got_state = ref_state.clone().transpose(-1, -2).contiguous().transpose(-1, -2)  # same layout
    ref = K.conv_step_reference(xi, ref_state, m.conv1d.weight, m.conv1d.bias)
    got = K.conv_step(xi, got_state, m.conv1d.weight, m.conv1d.bias, block_d=16)
    torch.testing.assert_close(got.float(), ref, **tol(dtype))
    torch.testing.assert_close(got_state.float(), ref_state.float(), **tol(dtype))
    torch.testing.assert_close(got_state[..., -1].float(), xi.float(), **tol(dtype))  # newest last


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ssm_kernel_matches_reference_and_updates_state(K, dtype):
    """dt (dt_proj + bias + softplus) + state update + D skip + gate, on random inputs; B = 3 rows
    with 2 rows per block exercises the partial last block."""
    model = make_model(dtype=dtype)
    m = model.backbone.layers[1].mixer
    B, DI, P = 3, model.cfg.d_inner, model.cfg.dt_rank + 2 * model.cfg.d_state
    xc, z = (torch.randn(B, DI, device=DEVICE).to(dtype) for _ in range(2))
    dbc = torch.randn(B, P, device=DEVICE).to(dtype)
    dbc[:, : model.cfg.dt_rank] *= 3  # dt_proj inputs over softplus's whole range
    ref_state = random_state(model, B).ssm_state[1]
    got_state = ref_state.clone()
    args = (m.dt_proj.weight, m.dt_proj.bias, m.A_log, m.D)
    ref = K.ssm_step_reference(xc, z, dbc, *args, ref_state)
    got = K.ssm_step(xc, z, dbc, *args, got_state, block_d=16, rows=2)
    torch.testing.assert_close(got.float(), ref, **tol(dtype))
    torch.testing.assert_close(got_state, ref_state, **FP32)  # float32 state, same float32 math


FUSED_VARIANTS = {  # KernelConfig overrides: every code path of the fused kernels
    "default": {},  # one row per block, states loaded before the PDL wait; d_model 40 in one chunk
    "chunked": {"chunk": 16, "block_d_in": 16},  # d_model in 3 chunks, the last one masked
    "rows-looped": {"fused_rows": None},  # every row in each block
    "late-state": {"early_state": False},
    "x-and-z-blocks": {"split_z": False, "pin": False},  # in_proj's x and z rows in one block, weights as loaded
    "x-and-z-blocks-chunked": {"split_z": False, "chunk": 16, "early_state": False},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("variant", list(FUSED_VARIANTS))
def test_fused_layer_kernels_match_layer_reference(K, dtype, bias, variant):
    """The fused mode (norm + in_proj + conv + x_proj in one kernel, the SSM + out_proj in the
    other, partial sums by atomics) equals one whole block in float32."""
    model = make_model(dtype=dtype, bias=bias, conv_bias=not bias, d_model=40)  # 40 = 16 + 16 + 8: a masked last chunk
    step = K.TritonStep(model, K.KernelConfig(**FUSED_VARIANTS[variant]))
    B = 3
    x = torch.randn(B, model.cfg.d_model, device=DEVICE)
    ref_state, got_state = random_state(model, B), random_state(model, B)
    block = model.backbone.layers[0]
    ref = K.layer_step_reference(x, block, ref_state.conv_state[0], ref_state.ssm_state[0])
    got = K.layer_step(step, 0, x.clone(), got_state.conv_state[0], got_state.ssm_state[0])
    torch.testing.assert_close(got, ref, **tol(dtype))
    torch.testing.assert_close(got_state.ssm_state, ref_state.ssm_state, **tol(dtype))
    torch.testing.assert_close(got_state.conv_state.float(), ref_state.conv_state.float(), **tol(dtype))


def test_fused_chunk_must_cover_d_model_in_four_powers_of_two(K):
    assert [K.chunk_for(d) for d in (40, 64, 768, 1024, 2048, 2560)] == [64, 64, 256, 256, 512, 1024]
    model = make_model(d_model=40)
    for chunk in (8, 24):  # 5 chunks; not a power of two
        with pytest.raises(ValueError, match="power of two that covers d_model 40"):
            K.TritonStep(model, K.KernelConfig(chunk=chunk))


@pytest.mark.parametrize(
    "kernel,block,warps,max_barriers",
    [("in", 32, 4, 14), ("in", 32, 8, 14), ("out", 32, 4, 24), ("out", 32, 8, 24), ("head", 16, 4, 20)],
)
def test_fused_kernels_keep_weight_tiles_out_of_shared_memory(K, fresh_python, kernel, block, warps, max_barriers):
    """The compiled sm_90 code after the PDL wait (benchmarks/kernel_sass.py): the weight tiles stay
    in the registers they were loaded into. Where the compiler instead converted out_proj's tile
    to the layout of y, it went through shared memory with ldmatrix in 16 rounds of two block
    barriers (39 barriers in all), the longest part of the out-kernel's serial chain; and where
    in_proj's tiles are not multiplied by the norm's weight before the wait (``pin``), converting
    that weight to the tiles' layout after it takes 11 more barriers (23 in all). The head keeps
    its tiles in bf16 (unpinned: 17 barriers by Triton 3.9, 8 by 3.6), and no thread of any of
    them may spill."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    code = (
        "import json, kernel_sass as k\n"
        f"c = k.compile_kernel({kernel!r}, {block}, {warps})\n"
        f"print(json.dumps([k.resources(c), k.after_wait({kernel!r}, {block}, {warps}, compiled=c)]))"
    )
    res, counts = json.loads(fresh_python(code, cwd=bench, timeout=300).splitlines()[-1])
    counts.setdefault("LDSM", 0)
    assert res["REG"] > 0 and res["STACK"] == 0, res
    assert counts["LDSM"] <= 2, counts  # (the small vectors' own conversions may use one)
    assert 0 < counts["BAR"] <= max_barriers, counts
    assert counts["ACQBULK"] == 1, counts
    assert counts.get("REDG", 0) >= (kernel != "head"), counts


def test_kernel_sass_rejects_a_bad_spec(fresh_python):
    """A switch that is not a compile-time one (here a pointer) is a usage error, not a traceback."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    out = fresh_python("import kernel_sass as k; print(k.main(['head:16:4:X=1']))", cwd=bench, timeout=300)
    assert out.splitlines()[-1] == "2"


# ---------------------------------------------------------------------------- whole step


def run_both(model, K, ids, fused, kernel_config=None):
    B, T = ids.shape
    step = K.TritonStep(model, kernel_config)
    ref_state, got_state = model.allocate_state(B), model.allocate_state(B)
    conv, ssm = got_state.conv_state.transpose(-1, -2), got_state.ssm_state.transpose(-1, -2)
    refs, gots, picks = [], [], []
    with torch.inference_mode():
        for t in range(T):
            refs.append(model.step(ids[:, t], ref_state))
            logits, nxt = step.run(ids[:, t].contiguous(), conv, ssm, fused=fused)
            gots.append(logits.clone())
            picks.append(nxt.clone())
    return torch.stack(refs, 1), torch.stack(gots, 1), torch.stack(picks, 1), ref_state, got_state


@pytest.mark.parametrize(
    "fused,variant",
    [(True, "default"), (True, "chunked"), (True, "rows-looped"), (True, "late-state"), (False, "default")],
    ids=["fused", "fused-chunked", "fused-rows-looped", "fused-late-state", "split"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_step_equals_torch_step(K, fused, variant, dtype):
    """Several steps from a zero state: logits, states and greedy picks as MambaLM.step's."""
    model = make_model(dtype=dtype, d_conv=3)  # d_conv 3: the conv window is masked too
    ids = torch.randint(0, model.cfg.vocab_size, (3, 5), device=DEVICE)
    ref, got, picks, rs, gs = run_both(model, K, ids, fused, K.KernelConfig(**FUSED_VARIANTS[variant]))
    t = tol(dtype) if fused or dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)  # split: bf16 GEMMs
    torch.testing.assert_close(got, ref, **t)
    torch.testing.assert_close(gs.ssm_state, rs.ssm_state, **t)
    assert torch.equal(picks, got.argmax(-1))  # the in-kernel pick is the first argmax
    if dtype == torch.float32:
        assert torch.equal(picks, ref.argmax(-1))


def test_greedy_pick_takes_the_first_of_tied_maxima(K):
    """torch.argmax returns the first index of a tie; the fused head + pick must too, also when the
    tied maxima sit in different blocks of the vocabulary (block_v=8: 37 tokens in 5 blocks)."""
    model = make_model(vocab=37)
    u = torch.randn(model.cfg.d_model, device=DEVICE)
    c = torch.zeros(37, device=DEVICE)
    c[[13, 20, 33]] = 2.0  # the max if u·h > 0: first index 13 (block 1)
    c[[5, 30]] = -2.0  # the max if u·h < 0: first index 5 (block 0), tie in block 3
    with torch.no_grad():  # logits = c · (u·h): rows with equal c tie exactly
        model.lm_head.weight.copy_(c[:, None] * u[None, :])
    step = K.TritonStep(model, K.KernelConfig(block_v=8))
    state = model.allocate_state(2)
    conv, ssm = state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2)
    with torch.inference_mode():
        for t in range(3):
            tokens = torch.tensor([[5, 13, 20][t], [30, 33, 13][t]], device=DEVICE)  # non-zero embeddings
            logits, nxt = step.run(tokens, conv, ssm, fused=True)
            for row in range(2):
                best = 13 if logits[row, 13] > logits[row, 5] else 5
                assert logits[row, best] == logits[row].max()
                assert nxt[row].item() == best == logits[row].argmax().item()


def test_step_backend_dispatch_equals_torch(K):
    """MambaLM.step(backend="triton") and decode_backend = "triton" go through the kernels and
    return what the torch step returns; a parameter update is seen by the next step."""
    model = make_model()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 3), device=DEVICE)
    a, b = model.allocate_state(2), model.allocate_state(2)
    with torch.inference_mode():
        for t in range(3):
            torch.testing.assert_close(model.step(ids[:, t], b, backend="triton"), model.step(ids[:, t], a), **FP32)
    with torch.no_grad():
        model.backbone.layers[0].mixer.out_proj.weight.mul_(1.5)
    model.decode_backend = "triton"
    got = model.step(ids[:, 0], b)
    model.decode_backend = "torch"
    torch.testing.assert_close(got, model.step(ids[:, 0], a), **FP32)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("grid", [(128, 4), (64, 1)], ids=["128x4", "64x1"])
def test_split_mode_at_paper_width_and_batch_256_is_exact_and_race_free(K, grid):
    """paper-130m's widths at batch 256 (split mode, where a grid is thousands of blocks): float32
    equals the torch step whatever the grid; bf16 runs repeat bit for bit, with and without PDL
    (an early-launched kernel touching data before its wait would show up here as moving bits)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (256, 3), device=DEVICE)
    kc = dict(split_block_d=grid[0], split_rows=grid[1])
    model = MambaLM(MambaConfig.preset("paper-130m", 1000, n_layer=2)).to(DEVICE).eval()
    ref, got, *_ = run_both(model, K, ids, False, K.KernelConfig(**kc))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    model = model.to(torch.bfloat16)
    runs = [run_both(model, K, ids, False, K.KernelConfig(**kc, pdl=pdl)) for pdl in (None, None, False)]
    for other in runs[1:]:
        assert torch.equal(other[1], runs[0][1]) and torch.equal(other[4].ssm_state, runs[0][4].ssm_state)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("block_d_in", [8, 64])
def test_fused_mode_at_paper_width_is_exact(K, block_d_in):
    """The fused kernels at paper-130m's widths (batch 4, float32) equal the torch step: the same
    in-place hazards as in split mode, with tiles smaller than the thread count."""
    torch.manual_seed(0)
    model = MambaLM(MambaConfig.preset("paper-130m", 1000, n_layer=2)).to(DEVICE).eval()
    ids = torch.randint(0, 1000, (4, 3), device=DEVICE)
    ref, got, *_ = run_both(model, K, ids, True, K.KernelConfig(block_d_in=block_d_in))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- CUDA graphs


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 16])  # fused; fused with bucket padding (3 -> 4); split
def test_graph_greedy_decoding_equals_torch(K, batch):
    from ssmagent.kernels.graph import GraphDecoder

    model = make_model(vocab=50)
    dec = GraphDecoder(model, max_batch=16)
    state, ref_state = dec.allocate_state(batch), model.allocate_state(batch)
    tok = ref_tok = torch.randint(0, 50, (batch,), device=DEVICE)
    for _ in range(12):
        with torch.inference_mode():
            ref_logits = model.step(ref_tok, ref_state)
        ref_tok = ref_logits.argmax(-1)
        tok = dec.greedy(tok, state)  # its own output fed straight back
        assert torch.equal(tok, ref_tok)
    torch.testing.assert_close(state.ssm_state, ref_state.ssm_state, **FP32)
    torch.testing.assert_close(dec.step(ref_tok, state), model.step(ref_tok, ref_state), **FP32)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [True, False])
def test_graph_sees_states_rewritten_between_replays(K, pdl):
    """The layer kernels read a layer's decode state before their PDL wait. A state rewritten in
    place between replays (as continuous batching resets a finished episode's row, by torch ops on
    the same stream) must still be what the next replay reads, every layer of it."""
    from ssmagent.kernels.graph import GraphDecoder

    model = make_model(vocab=50, n_layer=3)
    dec = GraphDecoder(model, max_batch=4, config=K.KernelConfig(pdl=pdl))
    state, ref_state = dec.allocate_state(3), model.allocate_state(3)
    tok = ref_tok = torch.randint(0, 50, (3,), device=DEVICE)
    for t in range(8):
        if t % 3 == 2:  # rewrite rows 0 and 2 of every layer's states, in both
            fresh = random_state(model, 3, seed=t)
            for s in (state, ref_state):
                s.conv_state[:, 0::2].copy_(fresh.conv_state[:, 0::2])
                s.ssm_state[:, 0::2].copy_(fresh.ssm_state[:, 0::2])
        with torch.inference_mode():
            ref_tok = model.step(ref_tok, ref_state).argmax(-1)
        tok = dec.greedy(tok, state)
        assert torch.equal(tok, ref_tok), t
        torch.testing.assert_close(state.ssm_state, ref_state.ssm_state, **FP32)
        torch.testing.assert_close(state.conv_state, ref_state.conv_state, **FP32)


@needs_cuda
@pytest.mark.gpu
def test_graph_step_with_a_foreign_state_and_lazy_capture(K):
    """A state not from allocate_state is copied in and out; capturing a new bucket in the middle
    of decoding leaves the live state untouched."""
    from ssmagent.kernels.graph import GraphDecoder

    model = make_model(dtype=torch.bfloat16)
    dec = GraphDecoder(model, max_batch=8)
    live = dec.allocate_state(2)
    ref_live = model.allocate_state(2)
    ids = torch.randint(0, model.cfg.vocab_size, (8, 4), device=DEVICE)
    with torch.inference_mode():
        for t in range(2):
            torch.testing.assert_close(dec.step(ids[:2, t], live), model.step(ids[:2, t], ref_live), **BF16)
        foreign, ref = random_state(model, 5), None
        ref = foreign.clone()
        for t in range(4):  # bucket 8 captured now, mid-way through `live`'s episode
            torch.testing.assert_close(dec.step(ids[:5, t], foreign), model.step(ids[:5, t], ref), **BF16)
        torch.testing.assert_close(foreign.ssm_state, ref.ssm_state, **BF16)
        torch.testing.assert_close(live.ssm_state, ref_live.ssm_state, **BF16)  # untouched by capture
        torch.testing.assert_close(dec.step(ids[:2, 2], live), model.step(ids[:2, 2], ref_live), **BF16)


@needs_cuda
@pytest.mark.gpu
def test_step_with_graph_backend_equals_torch_and_grows_with_the_batch(K):
    """MambaLM.step(backend="graph") (a cached GraphDecoder, states copied in and out) equals the
    torch step, also when a larger batch than before arrives, and under inference_mode."""
    model = make_model()
    for batch in (2, 5):
        ids = torch.randint(0, model.cfg.vocab_size, (batch, 3), device=DEVICE)
        a, b = model.allocate_state(batch), model.allocate_state(batch)
        with torch.inference_mode():
            for t in range(3):
                torch.testing.assert_close(model.step(ids[:, t], b, backend="graph"), model.step(ids[:, t], a), **FP32)
        torch.testing.assert_close(b.ssm_state, a.ssm_state, **FP32)


# ---------------------------------------------------------------------------- chunked scan (training, prefill)


def scan_inputs(b: int, l: int, d: int, N: int, h0: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, B, C = torch.randn(b, l, d, generator=g), torch.randn(b, l, N, generator=g), torch.randn(b, l, N, generator=g)
    dt = torch.rand(b, l, d, generator=g) * 0.5 + 0.01
    A = -(torch.rand(d, N, generator=g) * 2 + 0.1)
    h = torch.randn(b, d, N, generator=g) if h0 else None
    return [None if v is None else v.to(DEVICE).requires_grad_() for v in (x, dt, A, B, C, h)]


def scan_values_and_grads(scan, inputs, **kw):
    """y, h and the gradients of a loss that weighs every output and the last state."""
    x, dt, A, B, C, h0 = inputs
    y, h = scan(x, dt, A, B, C, h0=h0, **kw)
    weights = torch.linspace(-1, 1, y.shape[1], device=y.device)[None, :, None]
    loss = (y * weights).sum() + (h * h).sum()
    return [y, h, *torch.autograd.grad(loss, [v for v in inputs if v is not None])]


# (b, l, d_in, N, h0): a partial last chunk, a sequence shorter than a chunk, several chunks,
# d_in not a multiple of the block, no initial state
SCAN_SHAPES = [(2, 70, 20, 4, True), (1, 5, 16, 2, False), (2, 130, 8, 8, True)]


@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=[f"b{b}l{l}d{d}N{n}" for b, l, d, n, _ in SCAN_SHAPES])
def test_triton_scan_matches_the_reference_forward_and_backward(K, shape):
    from ssmagent.model.mamba import selective_scan, selective_scan_reference

    inputs = scan_inputs(*shape)
    got = scan_values_and_grads(selective_scan, inputs, backend="triton")
    want = scan_values_and_grads(selective_scan_reference, inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5 * max(1.0, w.abs().max().item()), rtol=1e-5)


def test_training_forward_with_the_triton_scan_equals_the_torch_scan(K):
    """The whole model, loss and gradients, through ``MambaLM.scan``."""
    from ssmagent.model.mamba import ScanOptions

    model = make_model().train()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3)).to(DEVICE)

    def loss_and_grads(backend):
        model.scan = ScanOptions(backend=backend)
        loss = model(ids).logsumexp(-1).mean()
        return [loss, *torch.autograd.grad(loss, list(model.parameters()))]

    for g, w in zip(loss_and_grads("triton"), loss_and_grads("torch")):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_triton_scan_rejects_what_it_cannot_run(K):
    from ssmagent.model.mamba import selective_scan

    x, dt, A, B, C, _ = scan_inputs(1, 4, 8, 4, False)
    with pytest.raises(ValueError, match="unknown scan backend"):
        selective_scan(x, dt, A, B, C, backend="cuda")
    x3, dt3, A3, B3, C3, _ = scan_inputs(1, 4, 8, 3, False)
    with pytest.raises(ValueError, match="power of two"):
        selective_scan(x3, dt3, A3, B3, C3, backend="triton")


# ---------------------------------------------------------------------------- bench


def test_roofline_counts_weights_once_and_state_twice():
    from ssmagent.bench.decode import roofline_bytes, state_bytes

    model = MambaLM(MambaConfig.preset("paper-130m", 50280)).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())  # tied head counted once
    assert 129_000_000 < params < 129_300_000
    assert state_bytes(model.cfg, 1, 2) == 24 * 1536 * (4 * 2 + 16 * 4)
    assert roofline_bytes(model, 8) == 2 * params + 2 * 8 * 24 * 1536 * 72


def test_bench_rows_on_cpu_mark_gpu_paths_unavailable():
    from ssmagent.bench.decode import bench_decode, format_table

    rows, meta = bench_decode(
        configs=["tiny"], vocabs=[20], batches=[2], impls=["torch", "graph"], dtype="float32", device="cpu", min_time=0.01
    )
    by = {r.impl: r for r in rows}
    assert by["torch"].us_per_token > 0 and by["torch"].tokens_per_s > 0 and by["torch"].roofline_pct > 0
    assert by["graph"].us_per_token is None and "CUDA" in by["graph"].note
    assert "tiny" in format_table(rows, meta)
