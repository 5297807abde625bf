"""Real-browser tests: headless Chromium (Selenium) against the real server (`scripts/invoke.py --web`)."""
