"""Allowed ranges of numbers: one check for every edge (config fields, function arguments, CLI flags).

A range is written as in maths, "(0, 10]" or "[1, 100000]", so the text in the code is the text in the error:
"objective.g_lr: must be a finite number in (0, 10], got inf". Non-finite numbers (inf, nan) and booleans
(True is an int to Python) never pass.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass


class RangeError(ValueError):
    user_error = True  # the CLI prints it as one line


@dataclass(frozen=True)
class Range:
    text: str
    low: float
    high: float
    low_open: bool
    high_open: bool

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below


@functools.lru_cache(maxsize=None)
def parse(text: str) -> Range:
    """'(0, 10]' -> Range; the bounds are any float() literal."""
    t = text.strip()
    if len(t) < 5 or t[0] not in "([" or t[-1] not in ")]" or "," not in t:
        raise ValueError(f"range {text!r}: expected e.g. '(0, 10]' or '[1, 100]'")
    low, high = (float(p) for p in t[1:-1].split(","))
    return Range(t, low, high, t[0] == "(", t[-1] == ")")


def problem(value, interval: str, integer: bool = False) -> str | None:
    """None when value is a (finite) number in interval; else what is wrong ("must be an integer in [1, 10],
    got 0"), the text every edge prints after the name (config field, argument, CLI flag)."""
    r = parse(interval)
    kind = "an integer" if integer else "a finite number"
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral if integer else numbers.Real)
    if not ok or not math.isfinite(value) or value not in r:
        return f"must be {kind} in {r.text}, got {value!r}"
    return None


def check(name: str, value, interval: str, integer: bool = False):
    """value when it is a (finite) number in interval; else RangeError naming `name` and the range."""
    wrong = problem(value, interval, integer)
    if wrong is not None:
        raise RangeError(f"{name}: {wrong}")
    return value
