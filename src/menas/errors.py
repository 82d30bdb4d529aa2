"""Exceptions shared across menas.

`UserError` is a mistake the user can fix (a bad config value, a missing file, a wrong argument): the CLI prints
it as one line and exits with 2. It subclasses ValueError so that library callers catching ValueError keep
working. Anything else that escapes is a bug and keeps its traceback. `MenasError` is menas' own failure that is
not a user mistake (a stopped search, an export that does not match): one line, exit 1.

`check`, `is_int` and `is_real` are the one set of value checks the library's validation edges share (genome
and space constructors, the store's writes, the strategies' records and settings), so every refused value reads
"WHERE: got VALUE, allowed: WHAT".
"""

from __future__ import annotations

import math
from typing import Any


class UserError(ValueError):
    """A mistake the user can fix; the message names the field or file, the value and what is allowed."""


class MenasError(Exception):
    """Base class for menas' own failures that are not user mistakes."""


class BudgetError(UserError):
    """No genome of the space satisfies the compute budget (names the reachable range)."""


class TrialFailed(MenasError):
    """A trial could not finish (non-finite loss, exploding loss, out of memory, ...); the search records it and
    goes on."""


def check(condition: bool, where: str, value: Any, allowed: str) -> None:
    """Raises `UserError("WHERE: got VALUE, allowed: ALLOWED")` unless `condition` holds.

    Args:
        condition: whether `value` is acceptable.
        where: the field, argument or file the value came from, e.g. "TrialSpec.trial_id" or "stage.out_chs".
        value: the value as given (shown with repr).
        allowed: what would have been accepted, e.g. "integers >= 0".
    """
    if not condition:
        raise UserError(f"{where}: got {value!r}, allowed: {allowed}")


def is_int(value: Any) -> bool:
    """True for an int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
