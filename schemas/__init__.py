"""Data contracts shared by the pipeline, trainer, model server and client."""

import os

# TF-GNN and keras-nlp 0.12 need Keras 2 (tf_keras); TensorFlow 2.16 picks the
# Keras version when it is first imported, and every part of this project
# imports `schemas` before anything else of TensorFlow's.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

EVENTS_SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "events_schema.pbtxt")
