"""Training: teacher forcing on expert trajectories written by the agent loop itself."""

from ssmagent.train.trainer import TrainConfig, TrainResult, collate, expert_batch, learning_rate, masked_loss, train

__all__ = ["TrainConfig", "TrainResult", "collate", "expert_batch", "learning_rate", "masked_loss", "train"]
