"""Prompts: syntax (emphasis, BREAK, negative brackets), term matching, chunking, and the Conditioner."""

from ldm.prompts.conditioner import Conditioner
from ldm.prompts.parser import BREAK, Fragment, parse_prompt, split_negative

__all__ = ["Conditioner", "Fragment", "BREAK", "parse_prompt", "split_negative"]
