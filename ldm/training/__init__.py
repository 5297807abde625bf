"""Training pieces attached to LatentDiffusion (attach.py): objective, LR schedules, per-step randomness, loss,
latent cache. The model never imports this package."""
