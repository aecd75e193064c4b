"""``ssmagent sandbox``: bad input is one line on stderr with exit code 2; run and doctor work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmagent.cli import main


def ssmagent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssmagent", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "hello.py"
    path.write_text("import sys\nprint('hello')\nsys.exit(4)\n")
    return path


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sandbox", "run", "/no/such/file.py"], "is not a file"),
        (["sandbox", "run", "SCRIPT", "--backend", "chroot"], "--backend must be auto, docker or bubblewrap"),
        (["sandbox", "run", "SCRIPT", "--timeout", "0"], "--timeout must be a positive number"),
        (["sandbox", "run", "SCRIPT", "--timeout", "-3"], "--timeout must be a positive number"),
        (["sandbox", "run", "SCRIPT", "--timeout", "inf"], "--timeout must be a positive number"),
        (["sandbox", "run", "SCRIPT", "--timeout", "soon"], "Invalid value for '--timeout'"),
        (["sandbox", "run"], "Missing argument"),
        (["sandbox", "build", "--bogus"], "No such option"),
        (["sandbox", "nosuch"], "No such command"),
    ],
)
def test_sandbox_user_errors_are_one_line_with_exit_code_2(args, needle, script):
    result = ssmagent(*[str(script) if a == "SCRIPT" else a for a in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(backend=st.text(max_size=12).filter(lambda b: b not in ("auto", "docker", "bubblewrap")),
       timeout=st.one_of(st.text(max_size=8), st.sampled_from(["0", "-1", "nan", "-inf", "1e999", "0x10"])))
def test_any_bad_backend_or_timeout_is_a_one_line_error(backend, timeout, script, monkeypatch, capsys):
    argv = ["ssmagent", "sandbox", "run", str(script), "--backend", backend, "--timeout", timeout]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err


def test_no_available_backend_is_a_one_line_error_saying_how_to_fix_it(script, tmp_path):
    # An engine address nothing answers at, and a PATH without bwrap: neither backend can run.
    env_run = subprocess.run(
        [sys.executable, "-m", "ssmagent", "sandbox", "run", str(script)], capture_output=True, text=True, timeout=120,
        env={"PATH": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"},
    )
    assert env_run.returncode == 2
    line = env_run.stderr.strip()
    assert "\n" not in line and "no sandbox backend is available" in line
    assert "docker:" in line and "DOCKER_HOST" in line and "apt-get install -y bubblewrap" in line


def test_run_json_reports_every_field(sandbox, script):
    result = ssmagent("sandbox", "run", str(script), "--backend", sandbox.name, "--timeout", "20", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {k: out[k] for k in ("exit_code", "stdout", "stderr", "timed_out", "truncated", "oom", "backend")} == {
        "exit_code": 4, "stdout": "hello\n", "stderr": "", "timed_out": False, "truncated": False, "oom": False,
        "backend": sandbox.name,
    }
    assert out["seconds"] > 0


def test_run_prints_the_observation_a_model_reads(bubblewrap_sandbox, script):
    result = ssmagent("sandbox", "run", str(script), "--backend", "bubblewrap")
    assert result.returncode == 0 and result.stdout.startswith("exit code 4\nstdout:\nhello\n")


def test_doctor_says_which_backend_auto_uses_and_why(bubblewrap_sandbox):
    result = ssmagent("sandbox", "doctor", "--json")
    report = json.loads(result.stdout)
    assert [b["name"] for b in report["backends"]] == ["docker", "bubblewrap"]
    assert report["chosen"] == next(b["name"] for b in report["backends"] if b["available"])
    assert all(b["reason"] for b in report["backends"]) and result.returncode == 0
    table = ssmagent("sandbox", "doctor")
    assert f"auto → {report['chosen']}" in table.stdout


def test_build_skips_an_image_that_exists(docker_sandbox):
    result = ssmagent("sandbox", "build")
    assert result.returncode == 0 and "already exists" in result.stdout
