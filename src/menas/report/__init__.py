"""Figures and tables of a run, read from its store. No torch."""
