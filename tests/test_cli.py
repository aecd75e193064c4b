"""The command line: user errors are one line and exit 2; solve, eval and report work end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssmagent.cli import bundled_checkpoint


def ssmagent(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmagent", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["solve", "addition", "12a", "5"], "not a non-negative decimal integer"),
        (["solve", "addition", "--", "-5", "3"], "not a non-negative decimal integer"),
        (["solve", "addition", "1"], "two operands"),
        (["solve", "addition", "1", "2", "3"], "two operands"),
        (["solve", "nosuchtask"], "unknown task 'nosuchtask'"),
        (["solve", "addition", "--size", "0"], "--size"),
        (["solve", "addition", "1", "2", "--policy", "oracle"], "--policy"),
        (["solve", "addition", "1", "2", "--checkpoint", "/no/such/file.safetensors"], "not found"),
        (["solve", "addition", "1", "2", "--device", "tpu"], "--device"),
        (["solve", "addition", "--bogus"], "No such option"),
        (["eval", "addition", "--sizes", "10,x"], "--sizes"),
        (["eval", "addition", "--sizes", "0"], "--sizes"),
        (["eval", "addition", "--episodes", "0"], "--episodes"),
        (["train", "addition", "--steps", "0"], "--steps"),
        (["train", "addition", "--config", "huge"], "huge"),
        (["train", "addition", "--dt-min", "1", "--dt-max", "0.5"], "dt-min"),
        (["train", "addition", "--scan", "fast"], "--scan"),
        (["train", "addition", "--device", "cpu", "--scan", "triton"], "--scan triton needs"),
        (["train", "addition", "--data", "/no/such.jsonl"], "no such file"),
        (["train", "addition", "--data", "/no/such.jsonl", "--max-size", "3"], "leave it out"),
        (["data", "addition"], "Missing option '--out'"),
        (["data", "addition", "--out", "x.jsonl", "--sizes", "4-2"], "--sizes"),
        (["data", "addition", "--out", "x.jsonl", "--sizes", "1,x"], "--sizes"),
        (["data", "addition", "--out", "x.jsonl", "--episodes", "0"], "--episodes"),
        (["data", "addition", "--out", "x.jsonl", "--sandbox", "docker"], "runs no code"),
        (["data", "codefix", "--out", "x.jsonl", "--sizes", "2000"], "at most 1000"),
        (["data", "codefix", "--out", "x.jsonl", "--sandbox", "fast"], "--sandbox must be"),
        (["eval", "addition", "--sandbox", "docker"], "runs no code"),
        (["solve", "codefix", "--size", "4", "--sandbox", "nope"], "--sandbox must be"),
        (["report", "eval", "/no/such.json"], "not an ssmagent eval results file"),
        (["solve", "addition", "1", "2", "--backend", "graph"], "--backend graph needs --device cuda"),
        (["solve", "addition", "1", "2", "--backend", "fast"], "--backend must be"),
        (["eval", "addition", "--backend", "triton"], "--backend triton needs"),
        (["bench", "decode", "--bogus"], "unrecognized arguments: --bogus"),
        (["bench", "decode", "--device", "cpu", "--configs", "huge"], "huge"),
        (["bench", "decode", "--batches", "0"], "argument --batches: '0' is not a comma-separated list of positive integers"),
        (["bench", "memory", "--lengths", "0"], "argument --lengths: '0' is not a comma-separated list of positive integers"),
        (["bench", "memory", "--chunk", "many"], "argument --chunk: 'many' is not a positive integer"),
        (["bench", "memory", "--device", "cpu", "--impls", "rnn"], "unknown --impls ['rnn']; choose from mamba, kv-transformer"),
        (["bench", "scan", "--shapes", "garbage"], "argument --shapes: 'garbage' is not BATCHxLENGTHxD_INNERxD_STATE"),
        (["bench", "scan", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_errors_are_one_line_on_stderr_with_exit_code_2(args, needle):
    result = ssmagent(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_a_checkpoint_file_that_is_not_one_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    result = ssmagent("solve", "addition", "1", "2", "--checkpoint", str(bad))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_resume_of_a_missing_run_is_a_user_error(tmp_path):
    result = ssmagent("train", "addition", "--resume", "--out", str(tmp_path / "none"), "--device", "cpu")
    assert result.returncode == 2 and "nothing to resume" in result.stderr


def test_solve_json_with_the_expert_reports_the_exact_answer():
    result = ssmagent("solve", "addition", "123456789", "987654321", "--policy", "expert", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["answer"] == "1111111110" and out["correct"] is True
    assert out["generated_tokens"] > 0 and out["seconds"] >= 0


@pytest.mark.parametrize("task", ["addition", "multiplication", "logic_graph", "hanoi", "codefix"])
def test_every_task_ships_a_checkpoint_of_its_own_within_4_mb(task):
    from ssmagent.model import load_checkpoint

    path = bundled_checkpoint(task)
    assert path.exists(), f"the {task} checkpoint must ship in src/ssmagent/checkpoints"
    assert path.stat().st_size <= 4 * 1024 * 1024
    assert load_checkpoint(path).meta["task"] == task


@pytest.mark.parametrize("task, size", [("hanoi", 7), ("logic_graph", 60), ("multiplication", 40)])
def test_solve_with_the_bundled_model_of_each_pointer_and_search_task_is_exact(task, size):
    result = ssmagent("solve", task, "--size", str(size), "--seed", "5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["correct"] is True


def test_solve_with_the_bundled_model_adds_a_carry_chain_exactly():
    result = ssmagent("solve", "addition", "9" * 60, "1", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["correct"] is True and out["answer"] == "1" + "0" * 60
    assert out["state_bytes"] > 0


def test_solve_prints_a_summary_with_the_check_tokens_and_state_size():
    result = ssmagent("solve", "addition", "--size", "30", "--seed", "4")
    assert result.returncode == 0, result.stderr
    for needle in ("exact", "generated", "tokens/s", "bytes"):
        assert needle in result.stdout


def test_eval_writes_results_a_table_and_a_plot_and_report_renders_them(tmp_path):
    result = ssmagent(
        "eval", "addition", "--policy", "expert", "--sizes", "3,40", "--episodes", "5",
        "--results-dir", str(tmp_path), "--name", "smoke", "--plot",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "addition" / "smoke.json").read_text())
    assert data["sizes"] == [3, 40] and data["rows"][0]["checkpoint"] == "expert"
    assert all(r["accuracy"] == 1.0 and r["episodes"] == 5 for r in data["rows"][0]["results"])
    assert (tmp_path / "addition" / "smoke.png").stat().st_size > 0
    report = ssmagent("report", "eval", str(tmp_path / "addition" / "smoke.json"))
    assert report.returncode == 0 and "| expert | 100 % (5/5) | 100 % (5/5) |" in report.stdout


def test_bench_decode_measures_our_step_side_by_side_on_cpu():
    result = ssmagent("bench", "decode", "--device", "cpu", "--configs", "tiny", "--vocabs", "116",
                      "--batches", "1,8", "--impls", "torch", "--dtype", "float32", "--min-time", "0.01")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("tiny")]
    assert [(r[2], r[3]) for r in rows] == [("1", "torch"), ("8", "torch")]
    assert "copy bandwidth" in result.stdout


def test_solve_shows_the_classic_hanoi_tower_when_no_seed_is_given():
    result = ssmagent("solve", "hanoi", "--size", "3", "--policy", "expert", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["answer"].splitlines() == ["1 A C", "2 A B", "1 C B", "3 A C", "1 B A", "2 B C", "1 A C"]
    assert out["correct"] is True and out["seed"] is None
    seeded = json.loads(ssmagent("solve", "hanoi", "--size", "3", "--seed", "5", "--policy", "expert", "--json").stdout)
    assert seeded["seed"] == 5 and seeded["correct"] is True


def test_data_writes_a_trajectory_file_that_train_data_trains_on(tmp_path):
    out = tmp_path / "add.jsonl"
    made = ssmagent("data", "addition", "--sizes", "1-3,5", "--episodes", "12", "--seed", "4", "--out", str(out))
    assert made.returncode == 0, made.stderr
    meta = json.loads((tmp_path / "add.meta.json").read_text())
    assert meta["count"] == 12 and meta["sizes"] == [1, 2, 3, 5] and "episodes/s" in made.stdout
    trained = ssmagent("train", "addition", "--data", str(out), "--steps", "2", "--batch-size", "4", "--warmup", "1",
                       "--eval-every", "2", "--eval-sizes", "3", "--eval-episodes", "1", "--device", "cpu",
                       "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    assert "from 12 trajectories" in trained.stdout and (tmp_path / "run" / "best.safetensors").exists()


def test_train_data_refuses_an_empty_file_and_another_task_s_in_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    hanoi = tmp_path / "hanoi.jsonl"
    assert ssmagent("data", "hanoi", "--sizes", "2", "--episodes", "1", "--out", str(hanoi)).returncode == 0
    for path, needle in ((empty, "holds no trajectories"), (hanoi, "a trajectory of 'hanoi', not 'addition'")):
        result = ssmagent("train", "addition", "--data", str(path), "--device", "cpu", "--out", str(tmp_path / "run"))
        assert result.returncode == 2 and needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
