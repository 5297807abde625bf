"""The browser UI (`scripts/invoke.py --web`): pages over the project's own API, served by FastAPI."""
