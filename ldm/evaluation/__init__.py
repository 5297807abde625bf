"""Evaluation tools: side-by-side comparison grids of embedding snapshots and the paper's CLIP metrics."""
