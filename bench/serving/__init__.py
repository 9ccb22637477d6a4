"""Serving benchmark: latency and throughput of the model server on MovieLens-100k.

`record` and `recommend` through the interest client, and raw Predicts, at
several concurrencies with request batching off and on, against the same
signatures called in-process (the lower bound). Run it with
`python -m bench.serving` (see README.md next to this file).
"""

# First, in every process (client processes import this package when they
# unpickle their work): TF-GNN needs Keras 2, chosen when TensorFlow is imported.
import schemas  # noqa: F401
