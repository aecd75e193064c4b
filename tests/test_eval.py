"""Evaluation helpers: eval sets, diagnoses of failures, state memory, merged result tables."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssmagent.agent import ExpertPolicy, ScriptedPolicy, Tokenizer, run_episodes, task_commands
from ssmagent.eval import eval_instances
from ssmagent.eval.diagnose import first_divergence
from ssmagent.eval.memory import channel_memory
from ssmagent.eval.report import accuracy_table, merge_results
from ssmagent.model import MambaConfig, MambaLM, save_checkpoint
from ssmagent.tasks import get_task
from ssmagent.tasks.addition import Sum
from test_loop import actions_of


def test_eval_sets_start_with_the_hard_instances_and_are_seeded(addition):
    first = eval_instances(addition, 50, 10, seed=0)
    assert first[:3] == addition.hard_instances(50)
    assert first == eval_instances(addition, 50, 10, seed=0)
    assert first != eval_instances(addition, 50, 10, seed=1)
    assert eval_instances(addition, 50, 2, seed=0) == addition.hard_instances(50)[:2]


def test_the_first_divergence_names_the_wrong_token_and_its_phase(addition, tokenizer):
    instance = Sum("4567", "1234")
    (expert,) = run_episodes(addition, [instance], ExpertPolicy(addition))
    actions = actions_of(expert)
    wrong_column = next(i for i, a in enumerate(actions) if a.startswith("1#"))  # 7+4 = 11: sum digit 1
    actions[wrong_column] = "2" + actions[wrong_column][1:]
    (broken,) = run_episodes(addition, [instance], ScriptedPolicy([actions]))
    found = first_divergence(addition, instance, broken, tokenizer)
    assert (found.expected, found.got) == ("1", "2")
    assert found.phase == "column 1 (least significant first)"
    assert found.context.endswith("⟨a,⟩7⟨b,⟩4")
    assert first_divergence(addition, instance, expert, tokenizer) is None


def test_phases_of_an_addition_episode(addition):
    assert addition.phase(["⟨a»+⟩"]) == "setup"
    assert addition.phase(["⟨a,⟩", "1", "⟨b,⟩", "2", "3", "#", "0", "⟨a,⟩"]) == "column 2 (least significant first)"
    assert addition.phase(["#", "⟨answer⟩", "⟨a$⟩", "⟨a«#⟩"]) == "answer, digit 2 (most significant first)"


def test_episodes_run_without_keeping_segments_keep_their_counts(addition):
    instances = [Sum("99", "1"), Sum("123", "45")]
    kept = run_episodes(addition, instances, ExpertPolicy(addition))
    light = run_episodes(addition, instances, ExpertPolicy(addition), keep_segments=False)
    assert all(t.segments == [] for t in light)
    assert [(t.answer, t.correct, t.generated_tokens, t.observed_tokens) for t in light] == [
        (t.answer, t.correct, t.generated_tokens, t.observed_tokens) for t in kept
    ]


def test_channel_memory_follows_the_dt_initialisation(addition, tokenizer):
    def longest_memory(dt_min, dt_max):
        torch.manual_seed(0)
        model = MambaLM(MambaConfig.preset("tiny", len(tokenizer), dt_min=dt_min, dt_max=dt_max)).eval()
        layers = channel_memory(model, addition, tokenizer, size=20)
        assert [layer.tau.shape for layer in layers] == [(128, 16)] * 2
        assert all((layer.tau > 0).all() for layer in layers)
        return max(layer.tau.max() for layer in layers)

    assert longest_memory(0.05, 0.5) < 60 < longest_memory(0.001, 0.1)


def _results(checkpoint, size, correct, episodes, seed=0):
    return {
        "task": "addition", "seed": seed, "sizes": [size], "command": f"eval {size}",
        "rows": [{"checkpoint": checkpoint, "results": [
            {"size": size, "correct": correct, "episodes": episodes, "accuracy": correct / episodes}]}],
    }


def test_merged_results_join_rows_by_checkpoint_and_report_mean_and_spread():
    merged = merge_results([
        {**_results("s0", 1000, 100, 100), "rows": _results("s0", 1000, 100, 100)["rows"] + _results("s1", 1000, 90, 100)["rows"]},
        _results("s0", 10000, 10, 10),
    ])
    assert merged["sizes"] == [1000, 10000]
    header, rows = accuracy_table(merged)
    assert rows[0] == ["s0", "100 % (100/100)", "100 % (10/10)"]
    assert rows[1] == ["s1", "90 % (90/100)", "—"]
    assert rows[2] == ["mean ± spread (min–max)", "95.0 % (90–100)", "100.0 % (100–100)"]
    with pytest.raises(ValueError, match="data seed"):
        merge_results([_results("s0", 10, 1, 1, seed=0), _results("s0", 10, 1, 1, seed=1)])


def test_eval_failures_option_prints_the_first_wrong_token(tmp_path):
    torch.manual_seed(0)
    task_tokenizer = Tokenizer.for_commands(task_commands(get_task("addition")))
    untrained = tmp_path / "untrained.safetensors"
    save_checkpoint(untrained, MambaLM(MambaConfig.preset("tiny", len(task_tokenizer))), task_tokenizer.vocab, {"task": "addition"})
    result = subprocess.run(
        [sys.executable, "-m", "ssmagent", "eval", "addition", "--sizes", "2", "--episodes", "2", "--checkpoints",
         str(untrained), "--failures", "1", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "first wrong token at stream position 1 (setup): expected '⟨a»+⟩'" in " ".join(result.stdout.split())
    data = json.loads((tmp_path / "addition" / "eval.json").read_text())
    assert data["rows"][0]["results"][0]["failures"] == [0, 1]
    assert np.isfinite(data["rows"][0]["results"][0]["peak_rss_mib"])


def test_multiplication_results_are_broken_down_into_n_by_1_and_n_by_2():
    from ssmagent.eval.sweep import evaluate_size

    task = get_task("multiplication")
    result, instances, _ = evaluate_size(task, ExpertPolicy(task), 6, 12, seed=3)
    assert set(result.by_variant) == {"n×1", "n×2"}
    assert sum(n for _, n in result.by_variant.values()) == 12 == sum(c for c, _ in result.by_variant.values())
    assert result.by_variant["n×2"][1] == sum(len(p.b) == 2 for p in instances)
    assert result.to_json()["by_variant"]["n×1"] == {"correct": result.by_variant["n×1"][0], "episodes": result.by_variant["n×1"][1]}


def test_a_variant_table_counts_only_that_variants_episodes():
    from ssmagent.eval.report import variants

    row = {"size": 10, "episodes": 4, "correct": 3, "accuracy": 0.75,
           "by_variant": {"n×1": {"correct": 2, "episodes": 2}, "n×2": {"correct": 1, "episodes": 2}}}
    results = {"task": "multiplication", "sizes": [10], "size_unit": "digits", "rows": [{"checkpoint": "a", "results": [row]}]}
    assert variants(results) == ["n×1", "n×2"]
    assert accuracy_table(results)[1][0][1] == "75 % (3/4)"
    assert accuracy_table(results, "n×1")[1][0][1] == "100 % (2/2)"
    assert accuracy_table(results, "n×2")[1][0][1] == "50 % (1/2)"
    assert variants({**results, "rows": [{"checkpoint": "a", "results": [{**row, "by_variant": {}}]}]}) == []
