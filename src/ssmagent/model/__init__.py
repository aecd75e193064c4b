"""The policy model: Mamba-1 in plain PyTorch, its decode state, and checkpoints."""

from ssmagent.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from ssmagent.model.mamba import (
    PRESETS,
    DecodeState,
    MambaConfig,
    MambaLM,
    selective_scan,
    selective_scan_reference,
)

__all__ = [
    "PRESETS",
    "Checkpoint",
    "CheckpointError",
    "DecodeState",
    "MambaConfig",
    "MambaLM",
    "load_checkpoint",
    "load_training_state",
    "save_checkpoint",
    "save_training_state",
    "selective_scan",
    "selective_scan_reference",
]
