"""One module per distillation method: its losses and its training step, nothing else."""
