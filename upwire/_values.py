"""Checks of option values that several modules take: durations in seconds, whole numbers.

Owns: what counts as a number of seconds (a real number, not bool, not NaN) and as a whole number (anything
with `__index__`, numpy's integers included, not bool), and the errors naming the option otherwise.
"""

from __future__ import annotations

import numbers
import operator


def seconds(name: str, value: object, *, zero: bool = False, optional: bool = True) -> float | None:
    """A duration option as a float: a positive number of seconds (0 too with `zero`), or None.

    NaN is refused: it compares false with everything, so a timeout of NaN would never expire.
    """
    if value is None and optional:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"{name} must be {kind}, not {value!r}")
    try:
        duration = float(value)
    except OverflowError:  # an int past a float's range
        raise ValueError(f"{name} is too large (None: no limit)") from None
    if not (duration >= 0 if zero else duration > 0):
        what = ("0 or more" if zero else "positive") + (" or None" if optional else "")
        raise ValueError(f"{name} must be {what}, not {value!r}")
    return duration


def whole_number(name: str, value: object, what: str = "a whole number") -> int:
    """`value` as an int if it is a whole number (an int, or numpy's: anything with __index__, not bool)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be {what}, not {value!r}") from None
