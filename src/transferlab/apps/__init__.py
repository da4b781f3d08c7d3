"""Layer 11: thin skins over the Python API (CLI, demo, bench, serve)."""
