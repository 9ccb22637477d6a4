"""Data contracts shared by the pipeline, trainer, model server and client."""

import os

EVENTS_SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "events_schema.pbtxt")
