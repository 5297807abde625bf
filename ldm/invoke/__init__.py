"""The invoke> REPL: InvokeAI-2-style command parsing, image recipes in PNG metadata, and the loop."""
