"""The line every benchmark ends with: ``RESULT <metric>=<value> target<op><value> PASS|FAIL``."""

from __future__ import annotations

import operator

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def result(metric: str, value: float, op: str, target: float, extra_ok: bool = True) -> bool:
    """Print the RESULT line for ``value <op> target`` (PASS also needs ``extra_ok``: the conditions
    that come with the target, e.g. no errors); return whether it passed."""
    ok = bool(_OPS[op](value, target)) and extra_ok
    print(f"RESULT {metric}={value:.3g} target{op}{target:g} {'PASS' if ok else 'FAIL'}")
    return ok
