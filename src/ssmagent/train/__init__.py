"""Training: teacher forcing on expert trajectories written by the agent loop itself, live or
from a fixed trajectory set generated once."""

from ssmagent.train.data import DataError, DataMeta, TrajectorySet, data_batch, generate, load_trajectory_set, meta_path
from ssmagent.train.trainer import TrainConfig, TrainResult, collate, expert_batch, learning_rate, masked_loss, train

__all__ = [
    "DataError",
    "DataMeta",
    "TrainConfig",
    "TrainResult",
    "TrajectorySet",
    "collate",
    "data_batch",
    "expert_batch",
    "generate",
    "learning_rate",
    "load_trajectory_set",
    "masked_loss",
    "meta_path",
    "train",
]
