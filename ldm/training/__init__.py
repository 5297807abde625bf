"""Training pieces composed by LatentDiffusion: LR schedules, per-step randomness, loss, latent cache."""
