"""Evaluation: length-generalisation sweeps, locality checks, tables and plots."""

from ssmagent.eval.sweep import SizeResult, eval_instances, evaluate_model, evaluate_size

__all__ = ["SizeResult", "eval_instances", "evaluate_model", "evaluate_size"]
