"""``railcar load --max-failures``: how many failures a run may have and still pass."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import click

from railcar.load.runner import LoadResult

# The exit status of a run that completed but failed its budget (0: passed, 2: could not
# run or bad input, 130: interrupted).
EXIT_FAILED: Final = 3

_BUDGET = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*")


@dataclass(frozen=True)
class FailureBudget:
    """At most ``limit`` failures, or at most ``limit`` percent of the attempts if ``percent``."""

    limit: float = 0
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.limit:g}%" if self.percent else f"{self.limit:g}"

    def verdict(self, result: LoadResult) -> str | None:
        """None if ``result`` passes; else why not. A run where nothing was answered never passes.

        Failures are the failed requests plus the failed connects; attempts, the
        requests sent plus the failed connects.
        """
        if not result.received:
            return "no request was answered"
        errors = result.errors
        attempts = result.sent + result.failure_kinds["connect"]
        allowed = self.limit * attempts / 100 if self.percent else self.limit
        if errors <= allowed:
            return None
        share = f" ({100 * errors / attempts:.2g}% of {attempts:,} attempts)" if self.percent else ""
        return f"{errors:,} failures{share} exceed --max-failures {self}"


class FailureBudgetType(click.ParamType[FailureBudget]):
    """``--max-failures``: a count such as ``10`` or a share of the attempts such as ``0.1%``."""

    name = "N|P%"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> FailureBudget:
        """Parse the budget; fails (usage error) on anything else or a share over 100%."""
        if isinstance(value, FailureBudget):
            return value
        match = _BUDGET.fullmatch(str(value))
        if match is None:
            self.fail(
                f"{value!r} is not a failure count (e.g. 10) or a share of attempts (e.g. 0.5%)", param, ctx
            )
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent and number > 100:
            self.fail(f"{value!r} is more than 100%", param, ctx)
        if not percent and not number.is_integer():
            self.fail(f"{value!r}: a count of failures is a whole number", param, ctx)
        return FailureBudget(number, percent)
