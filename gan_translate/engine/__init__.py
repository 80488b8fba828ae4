"""The training loop, checkpoints and LR schedules shared by every model."""
