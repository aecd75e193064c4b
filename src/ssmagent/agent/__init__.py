"""The agent: tokenizer, trajectories, policies and the loop that runs them against envs."""

from ssmagent.agent.loop import run_episodes
from ssmagent.agent.policies import ExpertPolicy, ModelPolicy, Policy, ScriptedPolicy
from ssmagent.agent.tokenizer import BASE_VOCAB, Tokenizer, TokenizerError, task_commands
from ssmagent.agent.trajectory import Segment, Trajectory, read_jsonl, write_jsonl

__all__ = [
    "BASE_VOCAB",
    "ExpertPolicy",
    "ModelPolicy",
    "Policy",
    "ScriptedPolicy",
    "Segment",
    "Tokenizer",
    "TokenizerError",
    "Trajectory",
    "read_jsonl",
    "task_commands",
    "run_episodes",
    "write_jsonl",
]
