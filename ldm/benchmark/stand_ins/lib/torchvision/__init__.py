"""A stand-in for the one piece of torchvision that diffusers' textual-inversion example uses (see README.md)."""

__version__ = "0.0.0+stand-in"
