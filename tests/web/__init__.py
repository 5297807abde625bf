"""Browser UI tests (a package, so these module names never clash with tests/'s own)."""
