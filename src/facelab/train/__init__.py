"""Training: model networks, data feeding, losses and checkpoints."""
