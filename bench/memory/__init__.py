"""Incremental long-term memory vs a full recomputation, on MovieLens-100k users."""
