"""Exceptions shared across menas. User mistakes are `ValueError`s (the CLI prints them as one line)."""


class MenasError(Exception):
    """Base class for menas' own failures that are not user mistakes."""


class BudgetError(ValueError):
    """No genome of the space satisfies the compute budget (names the reachable range)."""


class TrialFailed(MenasError):
    """A trial could not finish (non-finite loss, out of memory, ...); the search records it and goes on."""
