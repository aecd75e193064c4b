"""The GPU benchmarks' logic, on CPU with tiny sizes: the kv-transformer peer (its size and its
cached decoding), chunked prefill, and ``bench memory`` / ``bench scan`` / ``bench decode`` rows.

These check correctness and structure, never speed: the numbers come from the GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssmagent.bench.kv_transformer import LlamaShape, match_parameters, shape_for
from ssmagent.model import MambaConfig, MambaLM


def tiny_mamba(vocab: int = 40, seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    return MambaLM(MambaConfig.preset("tiny", vocab)).eval()


def ssmagent(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmagent", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


# ---------------------------------------------------------------------------- the kv-transformer peer


@pytest.mark.parametrize(("config", "vocab"), [("tiny", 116), ("tiny", 50280), ("paper-130m", 116), ("paper-130m", 50280)])
def test_peer_shape_has_the_mamba_models_parameter_count_within_10_percent(config, vocab):
    with torch.device("meta"):  # counts only: no memory, no init cost
        model = MambaLM(MambaConfig.preset(config, vocab))
    shape = shape_for(model)
    target = model.num_parameters()
    assert abs(shape.num_parameters() - target) <= 0.10 * target
    assert shape.vocab_size == vocab and shape.hidden_size == model.cfg.d_model
    assert shape.hidden_size % shape.num_heads == 0 and shape.intermediate_size % 8 == 0


def test_peer_shape_for_paper_130m_is_a_13_layer_768_wide_llama():
    shape = match_parameters(129_135_360, 50280, 768)
    assert shape == LlamaShape(50280, 768, 13, 12, 2000)
    assert shape.head_dim == 64


def test_peer_shape_refuses_a_target_below_its_embedding():
    with pytest.raises(ValueError, match="within 10%"):
        match_parameters(1_000, 50280, 64)


def test_llama_parameter_count_and_kv_bytes_match_what_transformers_holds():
    pytest.importorskip("transformers")
    from ssmagent.bench.kv_transformer import peer_for

    model = tiny_mamba()
    peer = peer_for(model)
    assert sum(p.numel() for p in peer.model.parameters()) == peer.shape.num_parameters()
    assert peer.model.lm_head.weight is peer.model.model.embed_tokens.weight  # tied
    assert peer.weight_bytes() == 4 * peer.shape.num_parameters()
    cache = peer.new_cache()
    peer.fill_random(cache, batch=2, tokens=9)
    assert cache.get_seq_length() == 9
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == peer.kv_bytes(2, 9) == peer.shape.kv_bytes(2, 9, 4)
    # one step after 9 tokens must read 10 tokens' keys and values and write 1 token's
    assert peer.shape.roofline_bytes(2, 9, 4) == peer.weight_bytes() + peer.kv_bytes(2, 10) + peer.kv_bytes(2, 1)


def test_kv_transformer_cached_greedy_decoding_equals_its_uncached_full_forward_argmax():
    pytest.importorskip("transformers")
    from ssmagent.bench.kv_transformer import greedy_decode, peer_for

    peer = peer_for(tiny_mamba())
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 40, (2, 5), generator=g)
    tokens, logits = greedy_decode(peer, prompt, steps=6)
    seq = prompt
    with torch.no_grad():
        for t in range(6):
            full = peer.model(input_ids=seq, use_cache=False).logits[:, -1].float()
            torch.testing.assert_close(logits[:, t], full, atol=1e-5, rtol=1e-5)
            assert torch.equal(tokens[:, t], full.argmax(-1))
            seq = torch.cat([seq, full.argmax(-1)[:, None]], 1)


def test_bench_decode_gives_the_kv_transformer_its_own_roofline_and_context():
    pytest.importorskip("transformers")
    from ssmagent.bench.decode import bench_decode, format_table, roofline_bytes

    rows, meta = bench_decode(configs=["tiny"], vocabs=[30], batches=[2], impls=["torch", "kv-transformer"],
                              dtype="float32", device="cpu", min_time=0.01, kv_context=6)
    by = {r.impl: r for r in rows}
    kv = by["kv-transformer"]
    assert kv.us_per_token > 0 and kv.max_abs_diff is None and "context 6" in kv.note
    model = tiny_mamba(30)
    expected = shape_for(model).roofline_bytes(2, 6, 4) / roofline_bytes(model, 2)
    assert kv.roofline_us / by["torch"].roofline_us == pytest.approx(expected, rel=1e-9)
    assert "kv-transformer" in format_table(rows, meta)


# ---------------------------------------------------------------------------- bench memory


def test_chunked_prefill_leaves_the_state_and_logits_of_a_one_shot_prefill():
    from ssmagent.bench.memory import prefill_chunked

    model = tiny_mamba()
    ids = torch.randint(0, 40, (2, 37), generator=torch.Generator().manual_seed(0))
    whole = model.allocate_state(2)
    logits = model.prefill(ids, whole)[:, -1]
    for chunk in (1, 8, 36, 64):
        state = model.allocate_state(2)
        last = prefill_chunked(model, ids, state, chunk)
        torch.testing.assert_close(last, logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.conv_state, whole.conv_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state.ssm_state, whole.ssm_state, atol=1e-5, rtol=1e-5)


def test_a_kv_cache_that_does_not_fit_is_reported_with_what_it_needs(monkeypatch):
    pytest.importorskip("transformers")
    from ssmagent.bench.kv_transformer import peer_for
    from ssmagent.bench.memory import MemoryBenchMeta, kv_rows, summary

    peer = peer_for(tiny_mamba())
    fill = peer.fill_random

    def fill_or_oom(cache, batch, tokens):  # a device that holds 20 tokens' cache, no more
        if tokens > 20:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        fill(cache, batch, tokens)

    monkeypatch.setattr(peer, "fill_random", fill_or_oom)
    rows = kv_rows(peer, [10, 20, 30, 40], batch=1, steps=2)
    assert [r.fits for r in rows] == [True, True, False, False]
    assert rows[2].need_mib == pytest.approx((peer.weight_bytes() + peer.kv_bytes(1, 32)) / 2**20)
    assert "does not fit" in rows[2].note and rows[2].peak_decode_mib is None
    meta = MemoryBenchMeta(
        device="cpu", torch=torch.__version__, transformers=None, config="tiny", vocab=40, dtype="float32", batch=1,
        chunk=16, steps=2, scan_backend="torch", decode_backend="torch", mamba_params=0, mamba_weight_mib=0.0,
        peer="", peer_params=0, peer_weight_mib=0.0, device_total_mib=None,
    )
    assert summary(rows, meta) == [f"kv-transformer: fits up to 20 tokens; does not fit from 30 tokens (needs ≥ {rows[2].need_mib:,.0f} MiB)"]


def test_bench_memory_runs_end_to_end_on_cpu_through_the_cli(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "mem.json"
    result = ssmagent("bench", "memory", "--device", "cpu", "--config", "tiny", "--vocab", "50", "--lengths", "40,8",
                      "--chunk", "16", "--steps", "2", "--dtype", "float32", "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["length"], r["impl"]) for r in rows] == [(8, "mamba"), (8, "kv-transformer"), (40, "mamba"), (40, "kv-transformer")]
    assert all(r["peak_decode_mib"] is None and r["fits"] for r in rows)  # no peak reading off CUDA
    mamba = [r for r in rows if r["impl"] == "mamba"]
    kv = [r for r in rows if r["impl"] == "kv-transformer"]
    assert mamba[0]["state_mib"] == mamba[1]["state_mib"] > 0  # constant in the length
    assert all(r["prefill_s"] > 0 for r in mamba) and "3 chunk(s)" in mamba[1]["note"]
    assert kv[1]["state_mib"] == pytest.approx(5 * kv[0]["state_mib"]) and "random" in kv[0]["note"]
    assert data["meta"]["scan_backend"] == "torch" and data["meta"]["decode_backend"] == "torch"
    assert data["summary"][0].startswith("mamba: no peak-memory reading on cpu")
    assert data["summary"][1].startswith("kv-transformer: fits at every length up to 40 tokens")
    assert "peak decode MiB" in result.stdout and data["summary"][0] in result.stdout


# ---------------------------------------------------------------------------- bench scan


def test_scan_roofline_counts_inputs_outputs_and_gradients():
    from ssmagent.bench.scan import ScanShape

    s = ScanShape.parse("8x2048x1536x16")
    assert s == ScanShape(8, 2048, 1536, 16) and str(s) == "8x2048x1536x16"
    assert s.fwd_bytes(4) == 4 * 8 * 2048 * (3 * 1536 + 2 * 16)  # x, dt, B, C in; y out
    assert s.bwd_bytes(2) == 2 * 8 * 2048 * (5 * 1536 + 4 * 16)  # x, dt, B, C, dy in; dx, ddt, dB, dC out
    for bad in ("garbage", "1x2x3", "1x2x3x0", "axbxcxd"):
        with pytest.raises(ValueError, match="BATCHxLENGTHxD_INNERxD_STATE"):
            ScanShape.parse(bad)


def test_bench_scan_default_shapes_follow_the_presets():
    from ssmagent.bench.scan import default_shapes

    assert [str(s) for s in default_shapes()] == ["32x11000x128x16", "8x2048x1536x16"]


def test_bench_scan_runs_end_to_end_through_the_cli(tmp_path):
    """On CPU with triton in its interpreter; where there is a GPU, on it (Triton 3.6's interpreter
    cannot run loops with bounds computed at run time, which the scan kernels have)."""
    out = tmp_path / "scan.json"
    cuda = torch.cuda.is_available()
    env = {} if cuda else {"TRITON_INTERPRET": "1"}
    result = ssmagent("bench", "scan", "--device", "cuda" if cuda else "cpu", "--shapes", "1x8x16x4", "--min-time", "0.01",
                      "--json", str(out), env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    by = {r["impl"]: r for r in data["rows"]}
    assert list(by) == ["torch", "triton", "mamba-ssm"]
    ref = by["torch"]
    assert ref["fwd_ms"] > 0 and ref["fwd_bwd_ms"] > 0 and ref["note"] == "the reference"
    assert ref["roofline_fwd_ms"] == pytest.approx(4 * 8 * (3 * 16 + 2 * 4) / (data["meta"]["copy_gbps"] * 1e9) * 1e3)
    assert ref["fwd_pct"] == pytest.approx(100 * ref["roofline_fwd_ms"] / ref["fwd_ms"])
    triton = by["triton"]
    if triton["note"] != "triton not installed":
        assert triton["fwd_ms"] is not None, triton["note"]
        assert triton["fwd_ms"] > 0 and triton["max_abs_diff"] < 1e-5 and triton["max_rel_grad_diff"] < 1e-5
    if not cuda:
        assert by["mamba-ssm"]["fwd_ms"] is None and by["mamba-ssm"]["note"] == "needs CUDA"
    assert "1x8x16x4" in result.stdout


# ---------------------------------------------------------------------------- import hygiene


def test_the_new_benches_import_and_run_with_torch_alone(fresh_python):
    """The GPU machine has no gymnasium or docker: bench memory and scan import without them, and
    without transformers or triton the rows say so instead of failing."""
    code = (
        "import sys\n"
        "for m in ('triton', 'gymnasium', 'docker', 'transformers', 'mamba_ssm'): sys.modules[m] = None\n"
        "from ssmagent.bench import kv_transformer, memory, scan\n"
        "rows, meta = memory.bench_memory(config='tiny', vocab=20, lengths=[6], device='cpu', chunk=4, steps=1, dtype='float32')\n"
        "assert [r.note for r in rows if r.impl == 'kv-transformer'] == ['transformers not installed'], rows\n"
        "rows, meta = scan.bench_scan(shapes=[scan.ScanShape(1, 4, 16, 4)], device='cpu', min_time=0.001)\n"
        "assert [r.note for r in rows] == ['the reference', 'triton not installed', 'needs CUDA'], rows\n"
    )
    fresh_python(code)


# ---------------------------------------------------------------------------- the docs' tables


def test_doc_tables_show_every_row_of_every_committed_result():
    """benchmarks/tables.py renders results/bench/*.json (what docs/performance.md shows): one table
    line per measured row, and the measured values as the run wrote them."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import tables
    finally:
        sys.path.pop(0)
    files = sorted((root / "results" / "bench").glob("*.json"))
    assert files, "no committed benchmark results"
    for path in files:
        data = json.loads(path.read_text())
        text = tables.table(data)
        body = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| batch") and "---" not in line]
        body = [line for line in body if not line.startswith(("| context", "| shape"))]
        assert len(body) == len(data["rows"]), path.name
        first = data["rows"][0]
        value = first.get("us_per_token") or first.get("peak_decode_mib") or first.get("fwd_ms")
        assert f"{value:,.1f}" in text or f"{value:,.2f}" in text, path.name
    with pytest.raises(ValueError, match="not a bench"):
        tables.table({"rows": [{"something": 1}]})
