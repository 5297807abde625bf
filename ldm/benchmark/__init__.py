"""Side-by-side speed and memory benchmarks of our training step and sampler against diffusers."""
