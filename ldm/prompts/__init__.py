"""Prompts: syntax (emphasis, BREAK, negative brackets), embedding-term matching, chunking, conditioning."""

from ldm.prompts.conditioning import PromptEncoder
from ldm.prompts.parser import BREAK, Fragment, parse_prompt, split_negative

__all__ = ["PromptEncoder", "Fragment", "BREAK", "parse_prompt", "split_negative"]
