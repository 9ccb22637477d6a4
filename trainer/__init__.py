"""Model training code."""
