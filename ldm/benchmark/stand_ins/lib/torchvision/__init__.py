"""A stand-in for the few pieces of torchvision that diffusers' textual-inversion examples use (see README.md)."""

__version__ = "0.0.0+stand-in"
