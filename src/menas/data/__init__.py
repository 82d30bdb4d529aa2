"""Datasets, search splits and loaders."""
