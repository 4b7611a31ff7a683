"""Training and evaluation: loss, metrics, baselines, the training loop."""
