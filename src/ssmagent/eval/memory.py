"""How far back can a checkpoint count? Per-channel memory of its SSM states.

A state channel (d, n) decays by exp(dt_t · A[d, n]) per token, so it remembers for about
τ = 1 / (dt · |A[d, n]|) tokens. dt depends on the input; we take each channel's mean dt over
a real episode (the expert's stream on a problem of the task), so τ is the memory the model
actually has while it works. Channels with τ far beyond the format's locality window are room
to learn count-based shortcuts, which are exact on short data and wrong on long (DESIGN.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ssmagent.agent import ExpertPolicy, Tokenizer, run_episodes
from ssmagent.eval.report import new_figure, save_figure
from ssmagent.tasks import Task


@dataclass
class LayerMemory:
    layer: int
    tau: np.ndarray
    """(d_inner, d_state) decay times in tokens."""

    def summary(self, window: int) -> dict[str, float]:
        return {
            "median": float(np.median(self.tau)),
            "max": float(self.tau.max()),
            f"channels_over_{window}": int((self.tau > window).sum()),
            "channels": int(self.tau.size),
        }


def channel_memory(model: torch.nn.Module, task: Task, tokenizer: Tokenizer, size: int, seed: int = 0) -> list[LayerMemory]:
    """Decay times of every state channel, with dt averaged over one expert episode of ``size``."""
    instance = task.sample(size, np.random.default_rng(seed))
    (trajectory,) = run_episodes(task, [instance], ExpertPolicy(task), batch_size=1)
    ids, _ = trajectory.stream(tokenizer)
    mean_dt: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.backbone.layers):
        def record(_module, _inputs, output, i=i):
            mean_dt[i] = F.softplus(output.float()).mean(dim=(0, 1))  # (d_inner,)
        hooks.append(layer.mixer.dt_proj.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for i, layer in enumerate(model.backbone.layers):
        A = torch.exp(layer.mixer.A_log.detach().float())  # |A|, (d_inner, d_state)
        layers.append(LayerMemory(i, (1.0 / (mean_dt[i][:, None] * A)).numpy()))
    return layers


def plot_memory(layers: list[LayerMemory], path, title: str, window: int) -> None:
    """Every channel's τ, sorted, one line per layer (log y), with the locality window marked."""
    fig, ax = new_figure()
    for layer in layers:
        tau = np.sort(layer.tau.ravel())[::-1]
        ax.plot(np.arange(1, tau.size + 1), tau, label=f"layer {layer.layer}")
    ax.axhline(window, color="gray", ls="--", lw=0.8, label=f"{window} tokens")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("state channels, longest memory first")
    ax.set_ylabel("memory τ = 1/(dt·|A|) (tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
