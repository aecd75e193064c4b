"""CPU figures of the vertical slice, measured side by side in one run.

    .venv/bin/python benchmarks/cpu.py [--checkpoint PATH] [--digits 1000] [--steps 400]

Prints: training steps/s (batch 32, operands ≤5 digits); decode µs/step and tokens/s at batch 1
and 64 for our constant-memory ``step`` and for ``transformers.MambaForCausalLM.generate`` on the
same weights (the peer; skipped with a note where transformers is absent), with the ratio; and
the wall time of one greedy addition episode of ``--digits`` digits with the real tool.
Timings are medians of repeats; the machine's other load shows up in them (compare ratios).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ssmagent.agent import ModelPolicy, Tokenizer, run_episodes
from ssmagent.model import load_checkpoint
from ssmagent.tasks import get_task
from ssmagent.train import TrainConfig, collate, expert_batch, masked_loss

BUNDLED = Path(__file__).resolve().parents[1] / "src/ssmagent/checkpoints/addition.safetensors"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_training(model, tokenizer, task, steps: int = 10) -> float:
    cfg = TrainConfig()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def one(step=[0]):
        inputs, targets, mask = collate(expert_batch(task, cfg.max_size, cfg.batch_size, 0, step[0]), tokenizer)
        step[0] += 1
        loss, _ = masked_loss(model(inputs), targets, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()
    seconds = median_time(one, steps)
    model.eval()
    return 1 / seconds


def bench_ours(model, batch: int, steps: int) -> float:
    state = model.allocate_state(batch)
    tokens = torch.randint(4, model.config.vocab_size, (batch,))

    def run():
        with torch.inference_mode():
            for _ in range(steps):
                model.step(tokens, state)

    run()
    return median_time(run, 3) / steps


def bench_transformers(model, batch: int, steps: int) -> float | None:
    try:
        from transformers import MambaForCausalLM
        from transformers.utils import logging
    except ImportError:
        return None
    logging.set_verbosity_error()  # it warns that mamba-ssm's kernels are absent: that is the CPU peer
    hf = MambaForCausalLM(model.config.to_hf_config())
    hf.load_state_dict(model.state_dict(), strict=False)
    hf.eval()
    prompt = torch.randint(4, model.config.vocab_size, (batch, 1))

    def run(n):
        with torch.inference_mode():
            hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)

    run(4)
    short = median_time(lambda: run(4), 3)
    long = median_time(lambda: run(steps + 4), 3)
    return (long - short) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED)
    parser.add_argument("--digits", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=400, help="decode steps per timing")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    task = get_task("addition")
    ckpt = load_checkpoint(args.checkpoint)
    model, tokenizer = ckpt.model, Tokenizer(ckpt.vocab)
    cfg = model.config
    print(f"model: {cfg.n_layer} layers, d_model {cfg.d_model}, d_state {cfg.d_state}, vocab {cfg.vocab_size}, "
          f"{model.num_parameters():,} parameters; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training: {bench_training(load_checkpoint(args.checkpoint).model, tokenizer, task):.1f} steps/s "
          "(batch 32, operands ≤5 digits, expert data generated on the fly)")
    print(f"{'batch':>5} | {'ours µs/step':>12} | {'ours tok/s':>10} | {'transformers µs/step':>20} | {'speed-up':>8}")
    for batch in (1, 64):
        ours = bench_ours(model, batch, args.steps)
        peer = bench_transformers(model, batch, max(50, args.steps // 4))
        peer_txt = f"{peer * 1e6:20.0f}" if peer else f"{'n/a':>20}"
        ratio = f"{peer / ours:7.1f}×" if peer else f"{'n/a':>8}"
        print(f"{batch:>5} | {ours * 1e6:12.0f} | {batch / ours:10,.0f} | {peer_txt} | {ratio}")
    instance = task.sample(args.digits, np.random.default_rng(0))
    policy = ModelPolicy(model, tokenizer, 1, max_action_tokens=task.max_action_tokens)
    start = time.perf_counter()
    (trajectory,) = run_episodes(task, [instance], policy, batch_size=1)
    seconds = time.perf_counter() - start
    total = trajectory.generated_tokens + trajectory.observed_tokens
    print(f"one {args.digits:,}-digit episode (seed 0): {seconds:.2f} s, {total:,} decode steps "
          f"({trajectory.generated_tokens:,} generated), {total / seconds:,.0f} steps/s, correct={trajectory.correct}")


if __name__ == "__main__":
    main()
