"""Experiment trackers: a search's trials logged to TensorBoard or MLflow as they finish (`track`; docs/tracking.md)."""
