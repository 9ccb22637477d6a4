"""The TFX pipeline that turns behaviour events into a pushed interest model."""
