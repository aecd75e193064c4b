"""The Mamba model: decoding equals the full forward, transformers agrees, the fast scan is exact."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ssmagent.model import DecodeState, MambaConfig, MambaLM, selective_scan, selective_scan_reference

VOCAB = 37


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, **overrides) -> MambaLM:
    """A small model with every weight perturbed, so no parameter sits at a trivial value."""
    torch.manual_seed(seed)
    cfg = MambaConfig.preset("tiny", VOCAB, **{"d_model": 32, "dt_min": 0.01, "dt_max": 0.5, **overrides})
    model = MambaLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.add_(0.3 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def step_all(model: MambaLM, ids: torch.Tensor, state: DecodeState | None = None) -> torch.Tensor:
    state = model.allocate_state(ids.shape[0]) if state is None else state
    with torch.inference_mode():
        return torch.stack([model.step(ids[:, t], state) for t in range(ids.shape[1])], dim=1)


def test_step_by_step_decoding_equals_full_forward():
    model = make_model()
    ids = torch.randint(0, VOCAB, (4, 45), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
    assert full.shape == (4, 45, VOCAB)
    torch.testing.assert_close(step_all(model, ids), full, atol=1e-5, rtol=0)


def test_prefill_then_step_equals_full_forward():
    model = make_model(seed=3)
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
    state = model.allocate_state(3)
    with torch.inference_mode():
        first = model.prefill(ids[:, :13], state)  # from the zero state
        second = model.prefill(ids[:, 13:30], state)  # from a non-zero state
    rest = step_all(model, ids[:, 30:], state)
    torch.testing.assert_close(torch.cat([first, second, rest], dim=1), full, atol=1e-5, rtol=0)


def test_prefill_leaves_the_state_that_stepping_leaves():
    model = make_model(seed=4)
    ids = torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(3))
    stepped, prefilled = model.allocate_state(2), model.allocate_state(2)
    step_all(model, ids, stepped)
    model.prefill(ids, prefilled)
    torch.testing.assert_close(prefilled.conv_state, stepped.conv_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(prefilled.ssm_state, stepped.ssm_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"d_model": 64},  # the tiny preset itself
        {"n_layer": 3, "d_model": 48, "d_state": 8, "tie_embeddings": False, "bias": True, "dt_rank": 5},
    ],
    ids=["tiny", "3-layer-untied"],
)
def test_logits_match_transformers_mamba(overrides):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    model = make_model(seed=5, **overrides)
    hf = transformers.MambaForCausalLM(model.cfg.to_hf_config()).eval()
    hf.load_state_dict(model.state_dict(), strict=True)  # same names, same shapes
    ids = torch.randint(0, VOCAB, (2, 33), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_hf_config_has_the_same_architecture():
    pytest.importorskip("transformers")
    cfg = MambaConfig.preset("paper-130m", 50280)
    hf = cfg.to_hf_config()
    assert (hf.hidden_size, hf.num_hidden_layers, hf.state_size, hf.conv_kernel) == (768, 24, 16, 4)
    assert (hf.intermediate_size, hf.time_step_rank, hf.expand) == (1536, 48, 2)
    assert hf.residual_in_fp32 and hf.tie_word_embeddings and not hf.use_bias and hf.use_conv_bias
    assert hf.layer_norm_epsilon == cfg.norm_eps


def scan_inputs(b: int, l: int, d: int, n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, d, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(b, l, d, generator=g, dtype=dtype) - 1)  # Δ > 0, some large
    A = -torch.exp(torch.randn(d, n, generator=g, dtype=dtype))  # A < 0
    B = torch.randn(b, l, n, generator=g, dtype=dtype)
    C = torch.randn(b, l, n, generator=g, dtype=dtype)
    D = torch.randn(d, generator=g, dtype=dtype)
    h0 = torch.randn(b, d, n, generator=g, dtype=dtype)
    return [x, dt, A, B, C, D, h0]


def values_and_grads(scan, inputs, **kwargs):
    inputs = [t.clone().requires_grad_() for t in inputs]
    y, h = scan(*inputs, **kwargs)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # a loss that reaches every y_t
    ((y * weights).sum() + (h * h).sum()).backward()
    return [y.detach(), h.detach()] + [t.grad for t in inputs]


@pytest.mark.parametrize("length,chunk", [(1, 8), (7, 8), (19, 4), (33, 8)])
def test_fast_scan_matches_reference_values_and_gradients(length, chunk):
    inputs = scan_inputs(2, length, 6, 5, seed=length)
    names = ["y", "h_last", "grad x", "grad dt", "grad A", "grad B", "grad C", "grad D", "grad h0"]
    expected = values_and_grads(selective_scan_reference, inputs)
    got = values_and_grads(selective_scan, inputs, chunk_size=chunk)
    for name, e, g in zip(names, expected, got):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10, msg=name)


def test_fast_scan_without_initial_state_or_skip_matches_reference():
    x, dt, A, B, C, _, _ = scan_inputs(3, 10, 4, 3, seed=7)
    y_ref, h_ref = selective_scan_reference(x, dt, A, B, C)
    y, h = selective_scan(x, dt, A, B, C, chunk_size=3)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


def test_fast_scan_stays_finite_with_very_fast_decay():
    x, dt, A, B, C, D, _ = scan_inputs(2, 50, 4, 3, seed=8, dtype=torch.float32)
    dt = dt * 100  # exp(Δ A) underflows to 0: must give zeros, never inf or nan
    inputs = [t.requires_grad_() for t in (x, dt, A, B, C)]
    y, h = selective_scan(*inputs, chunk_size=16)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert all(torch.isfinite(t.grad).all() for t in inputs)


def test_training_gradients_match_the_reference_scan():
    """The fast scan changes nothing about what the model learns: whole-model gradients agree."""
    model = make_model(seed=9).double().train()
    ids = torch.randint(0, VOCAB, (2, 23), generator=torch.Generator().manual_seed(9))

    def grads():
        model.zero_grad()
        F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast = grads()
    import ssmagent.model.mamba as mamba

    original = mamba.selective_scan
    mamba.selective_scan = lambda x, dt, A, B, C, D=None, h0=None, chunk_size=8, backend="torch": selective_scan_reference(
        x, dt, A, B, C, D, h0
    )
    try:
        slow = grads()
    finally:
        mamba.selective_scan = original
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], atol=1e-10, rtol=1e-8, msg=name)


def test_decode_state_size_is_independent_of_steps_taken():
    model = make_model()
    state = model.allocate_state(5)
    cfg = model.cfg
    expected = cfg.n_layer * 5 * cfg.d_inner * (cfg.d_conv + cfg.d_state) * 4  # float32
    assert state.nbytes() == expected
    before = [(t.shape, t.data_ptr()) for t in (state.conv_state, state.ssm_state)]
    step_all(model, torch.randint(0, VOCAB, (5, 300)), state)
    assert state.nbytes() == expected
    assert [(t.shape, t.data_ptr()) for t in (state.conv_state, state.ssm_state)] == before  # in place
    assert state.conv_state.shape == (cfg.n_layer, 5, cfg.d_inner, cfg.d_conv)
    assert state.ssm_state.shape == (cfg.n_layer, 5, cfg.d_inner, cfg.d_state)
    assert state.ssm_state.dtype == torch.float32


def test_reset_rows_starts_those_rows_afresh_and_leaves_the_others():
    model = make_model()
    g = torch.Generator().manual_seed(10)
    history, future = torch.randint(0, VOCAB, (3, 12), generator=g), torch.randint(0, VOCAB, (3, 9), generator=g)
    state = model.allocate_state(3)
    step_all(model, history, state)
    reference = state.clone()
    state.reset_rows([1])
    assert state.conv_state[:, 1].abs().sum() == 0 and state.ssm_state[:, 1].abs().sum() == 0
    got = step_all(model, future, state)
    torch.testing.assert_close(got[1:2], step_all(model, future[1:2]), atol=1e-6, rtol=0)  # as new
    kept = step_all(model, future, reference)
    torch.testing.assert_close(got[[0, 2]], kept[[0, 2]], atol=0, rtol=0)  # untouched
    state.reset_rows(torch.tensor([True, False, True]))  # a mask works too
    assert state.ssm_state[:, [0, 2]].abs().sum() == 0 and state.ssm_state[:, 1].abs().sum() > 0


def test_select_rows_keeps_the_chosen_rows_in_order():
    model = make_model()
    g = torch.Generator().manual_seed(11)
    history, future = torch.randint(0, VOCAB, (4, 10), generator=g), torch.randint(0, VOCAB, (4, 6), generator=g)
    state = model.allocate_state(4)
    step_all(model, history, state)
    small = state.select_rows([3, 1])
    assert small.batch_size == 2 and small.nbytes() * 2 == state.nbytes()
    expected = step_all(model, future, state)[[3, 1]]
    torch.testing.assert_close(step_all(model, future[[3, 1]], small), expected, atol=1e-6, rtol=0)
    masked = state.select_rows(torch.tensor([False, True, False, True]))
    assert masked.batch_size == 2


def test_step_rejects_a_batch_that_does_not_match_the_state():
    model = make_model()
    with pytest.raises(ValueError, match="expected"):
        model.step(torch.zeros(3, dtype=torch.long), model.allocate_state(2))


def test_step_follows_parameter_updates():
    """Decoding caches derived weights; an optimizer step must not leave them stale."""
    model = make_model()
    ids = torch.randint(0, VOCAB, (2, 8))
    step_all(model, ids)  # fills the cache
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        full = model(ids)
    torch.testing.assert_close(step_all(model, ids), full, atol=1e-5, rtol=0)


def test_dt_init_lies_in_the_configured_range():
    for dt_min, dt_max in [(0.001, 0.1), (0.05, 0.5)]:
        torch.manual_seed(0)
        model = MambaLM(MambaConfig.preset("tiny", VOCAB, dt_min=dt_min, dt_max=dt_max))
        for block in model.backbone.layers:
            dt = F.softplus(block.mixer.dt_proj.bias.detach())
            assert dt.min() >= dt_min * (1 - 1e-4) and dt.max() <= dt_max * (1 + 1e-4)
            assert dt.max() > dt_min + 0.5 * (dt_max - dt_min) * 0.1  # spread, not a constant


def test_init_follows_mamba():
    torch.manual_seed(0)
    model = MambaLM(MambaConfig.preset("tiny", VOCAB))
    m = model.backbone.layers[0].mixer
    torch.testing.assert_close(-torch.exp(m.A_log[0]), -torch.arange(1.0, 17.0))  # S4D-real
    assert torch.all(m.D == 1)
    assert m.dt_proj.weight.abs().max() <= model.cfg.dt_rank**-0.5
    assert abs(model.backbone.embeddings.weight.std().item() - 0.02) < 0.003
    assert model.lm_head.weight is model.backbone.embeddings.weight  # tied


def test_init_is_deterministic_given_the_seed():
    def weights(seed):
        torch.manual_seed(seed)
        return MambaLM(MambaConfig.preset("tiny", VOCAB)).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["backbone.layers.0.mixer.dt_proj.bias"], c["backbone.layers.0.mixer.dt_proj.bias"])


def test_parameter_names_are_transformers_names():
    model = make_model(n_layer=1)
    names = set(model.state_dict())
    expected = {
        "backbone.embeddings.weight",
        "backbone.norm_f.weight",
        "lm_head.weight",
        "backbone.layers.0.norm.weight",
        *(
            f"backbone.layers.0.mixer.{n}"
            for n in ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight"]
            + ["dt_proj.bias", "A_log", "D", "out_proj.weight"]
        ),
    }
    assert names == expected


def test_num_parameters_counts_tied_weights_once():
    model = MambaLM(MambaConfig.preset("tiny", 64))
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    assert 60_000 < model.num_parameters() < 80_000  # the ~70k-parameter tiny model
    untied = MambaLM(MambaConfig.preset("tiny", 64, tie_embeddings=False))
    assert untied.num_parameters() == model.num_parameters() + 64 * 64


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="tiny.*paper-130m"):
        MambaConfig.preset("huge", 10)


def test_config_round_trips_through_a_dict_and_resolves_dt_rank():
    cfg = MambaConfig.preset("tiny", 50, dt_min=0.05, dt_max=0.5)
    assert cfg.dt_rank == math.ceil(64 / 16) and cfg.d_inner == 128
    assert MambaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MambaConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="dt_min"):
        MambaConfig(vocab_size=5, d_model=8, n_layer=1, dt_min=0.5, dt_max=0.1)


def test_training_reduces_the_loss():
    """Gradients flow through every part: a counting sequence (t+1 follows t) is learnt quickly."""
    torch.manual_seed(0)
    model = MambaLM(MambaConfig.preset("tiny", 8, d_model=32)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        ids = (torch.randint(0, 8, (16, 1), generator=g) + torch.arange(12)) % 8  # (16, 12)
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:3]) / 3


def test_model_module_imports_with_torch_only():
    code = (
        "import sys, ssmagent.model.mamba, ssmagent.model;"
        "bad = [m for m in ('transformers', 'gymnasium', 'docker', 'safetensors') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
