"""Fixed trajectory sets: expert episodes generated once, then trained on as often as needed.

Live expert batches (``expert_batch``) are free for tasks whose tools are pure Python, but a
codefix episode runs its program in the sandbox several times (~0.04 s a run on bubblewrap,
~0.45 s on Docker): ~100 sandbox runs per optimizer step. So such a task's expert runs once,
on a CPU machine with the real sandbox, through the same env and agent loop as everywhere
else, and its trajectories go to a JSONL file (the usual trajectory format, DESIGN.md §2) that
training reads, possibly on another machine.

Episode ``i`` of a set is ``task.sample(size_i, default_rng(seed_i))`` with (size_i, seed_i)
drawn from ``default_rng(seed)``: the set is a pure function of (task, sizes, episodes, seed),
and each episode's record carries its seed, so ``ssmagent solve TASK --size N --seed S
--policy expert`` replays it. A sidecar ``FILE.meta.json`` says what the file holds and its
SHA-256, the identity a training run records so that it is resumed only on the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ssmagent.agent import ExpertPolicy, Tokenizer, TokenizerError, Trajectory, read_jsonl, run_episodes
from ssmagent.agent.trajectory import jsonl_line
from ssmagent.atomic import atomic_write, atomic_write_text
from ssmagent.tasks import Task

CHUNK = 64
"""Episodes run (and written) together: memory stays flat however many the set holds."""


class DataError(ValueError):
    """A trajectory file that cannot be trained on, or an expert episode that failed (one line)."""


@dataclass(frozen=True)
class DataMeta:
    """The sidecar record of a trajectory file."""

    task: str
    sizes: list[int]
    """The sizes drawn from, uniformly."""
    seed: int
    episodes: int
    count: int
    """Trajectories in the file (one per line)."""
    tokens: int
    """Generated plus observed tokens of all episodes: what one pass over the file trains on."""
    generated_tokens: int
    """The tokens the loss counts (thought, tool and answer)."""
    backend: str | None
    """The sandbox backend the programs ran on; None for tasks that run no code."""
    sha256: str


@dataclass(frozen=True)
class TrajectorySet:
    """A checked trajectory file in memory, and the SHA-256 of its bytes."""

    path: Path
    sha256: str
    trajectories: tuple[Trajectory, ...]

    @property
    def max_size(self) -> int:
        return max(t.size for t in self.trajectories)


def meta_path(path: str | Path) -> Path:
    """``FILE.jsonl`` → ``FILE.meta.json``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def episode_plan(sizes: Sequence[int], episodes: int, seed: int) -> list[tuple[int, int]]:
    """(size, instance seed) of each episode: sizes uniform in ``sizes``."""
    rng = np.random.default_rng(seed)
    drawn = rng.choice(np.asarray(sizes), size=episodes)
    seeds = rng.integers(0, 2**31, size=episodes)
    return [(int(s), int(k)) for s, k in zip(drawn, seeds)]


def expert_episodes(
    task: Task, plan: Sequence[tuple[int, int]], on_episode: Callable[[int, Trajectory], None] | None = None
) -> list[Trajectory]:
    """The expert's trajectories of these (size, seed) episodes, in order; DataError on any
    episode without reward 1 (a bug in the expert or a broken sandbox: never training data)."""
    instances = [task.sample(size, np.random.default_rng(seed)) for size, seed in plan]
    trajectories = run_episodes(task, instances, ExpertPolicy(task), batch_size=CHUNK,
                                seeds=[seed for _, seed in plan], on_episode=on_episode)
    for t in trajectories:
        if not t.correct or t.truncated:
            ended = "was truncated" if t.truncated else f"ended with reward 0 (answer {t.answer[:40]!r})"
            raise DataError(f"the {task.name} expert failed: its episode of size {t.size}, seed {t.seed} {ended}; "
                            f"replay it with `ssmagent solve {task.name} --size {t.size} --seed {t.seed} --policy expert`")
    return trajectories


def generate(
    task: Task,
    sizes: Sequence[int],
    episodes: int,
    seed: int,
    out: str | Path,
    backend: str | None = None,
    on_episode: Callable[[Trajectory], None] | None = None,
) -> DataMeta:
    """Run the expert on ``episodes`` instances and write their trajectories to ``out`` (JSONL)
    and its metadata to ``meta_path(out)``. Both are written atomically, the data first: a
    failure or an interrupt leaves no partial file (and an older ``out`` untouched)."""
    plan = episode_plan(sizes, episodes, seed)
    tokens = generated = 0
    notify = (lambda index, trajectory: on_episode(trajectory)) if on_episode else None

    def write(tmp: str) -> None:
        nonlocal tokens, generated
        with open(tmp, "w", encoding="utf-8") as f:
            for start in range(0, len(plan), CHUNK):
                chunk = expert_episodes(task, plan[start : start + CHUNK], notify)
                for t in chunk:
                    f.write(jsonl_line(t))
                    tokens += t.generated_tokens + t.observed_tokens
                    generated += t.generated_tokens

    atomic_write(out, write)
    meta = DataMeta(task.name, sorted(set(sizes)), seed, episodes, len(plan), tokens, generated, backend, file_sha256(out))
    atomic_write_text(meta_path(out), json.dumps(asdict(meta), indent=2) + "\n")
    return meta


def load_trajectory_set(path: str | Path, task: Task, tokenizer: Tokenizer) -> TrajectorySet:
    """Read a trajectory file to train ``task`` on; DataError (one line, naming the file and
    line) unless it exists and every line is a correct episode of this task whose tokens the
    tokenizer knows — a bad file fails here, not as a shape error steps into training."""
    path = Path(path)
    hint = f"write one with `ssmagent data {task.name} --out {path}`"
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; {hint}")
    try:
        trajectories = tuple(read_jsonl(path))
    except UnicodeDecodeError:
        raise DataError(f"--data {path} is not UTF-8 text; pass a trajectory JSONL file") from None
    except (ValueError, OSError) as err:  # read_jsonl's message names the file and line
        raise DataError(f"--data {err}") from None
    if not trajectories:
        raise DataError(f"--data {path} holds no trajectories; {hint}")
    for number, t in enumerate(trajectories, 1):
        where = f"--data {path}:{number}"
        if t.task != task.name:
            raise DataError(f"{where}: a trajectory of {t.task!r}, not {task.name!r}; {hint}")
        if not t.correct:
            raise DataError(f"{where}: an episode that failed (correct is {t.correct}); train only on correct ones")
        try:
            t.stream(tokenizer)
        except TokenizerError as err:
            raise DataError(f"{where}: {err} of {task.name}") from None
    return TrajectorySet(path, file_sha256(path), trajectories)


def data_batch(trajectories: Sequence[Trajectory], batch_size: int, seed: int, step: int) -> list[Trajectory]:
    """The trajectories of one training step, drawn uniformly (with replacement) from a fixed
    set: a pure function of (seed, step), like ``expert_batch``, so a resumed run sees the
    batches an uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    return [trajectories[i] for i in rng.integers(0, len(trajectories), size=batch_size)]
