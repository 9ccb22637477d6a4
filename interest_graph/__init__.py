"""Command line and end-to-end demo (may import every top-level package)."""
