"""Exceptions shared across menas.

`UserError` is a mistake the user can fix (a bad config value, a missing file, a wrong argument): the CLI prints
it as one line and exits with 2. It subclasses ValueError so that library callers catching ValueError keep
working. Anything else that escapes is a bug and keeps its traceback. `MenasError` is menas' own failure that is
not a user mistake (a stopped search, an export that does not match): one line, exit 1.
"""


class UserError(ValueError):
    """A mistake the user can fix; the message names the field or file, the value and what is allowed."""


class MenasError(Exception):
    """Base class for menas' own failures that are not user mistakes."""


class BudgetError(UserError):
    """No genome of the space satisfies the compute budget (names the reachable range)."""


class TrialFailed(MenasError):
    """A trial could not finish (non-finite loss, exploding loss, out of memory, ...); the search records it and
    goes on."""
