"""Interest-store backends; import them through `serving.interest_store`."""
