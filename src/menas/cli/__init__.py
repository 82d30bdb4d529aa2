"""The `menas` command."""
