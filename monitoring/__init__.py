"""The drift monitor: reads the prediction log and the reference data, never the service."""
