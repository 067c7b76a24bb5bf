"""Hyper-parameter checks shared by the budgeted methods (run at build time and at call time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compressors._core import check_retention


def require_retention(method: str, retention: float | None) -> float:
    """The retention of a method that has no other way to set its budget; None is an error."""
    if retention is None:
        raise ValueError(
            f"compressor {method!r} needs a token budget: pass retention in (0, 1], e.g. "
            f"build({method!r}, retention=0.35)"
        )
    return check_retention(retention)


def needs_retention(method: str) -> Callable[[dict[str, Any]], None]:
    """A build-time `check=` for methods whose only required parameter is `retention`."""

    def check(params: dict[str, Any]) -> None:
        require_retention(method, params["retention"])

    return check


def integer_at_least(name: str, value: Any, minimum: int) -> int:
    """`value` as an integer >= minimum (bools and floats rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
