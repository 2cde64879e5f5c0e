"""The one budget solver: which operating points fit a per-image budget, best first, and which are worth running.

Every budget goes through here, with one wording of its error: a Resizable
bundle's own paths (the `budget` rule), the device's latency table for the
other families (runtime/serving/budgets.py), and Resizable-NAS's lookup
table (trainer/resizable_nas.py). An option's cost is per image and includes
whatever runs before it (a selector); latency is measured on one device and
backend, named by `latency_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BudgetError", "Option", "Budget", "latency_key", "require_latencies", "admissible", "frontier"]


class BudgetError(ValueError):
    """No operating point fits the budget; the message names the cheapest and what it costs."""


def latency_key(device: str, backend: str) -> str:
    """How latencies are keyed: where they were measured, e.g. "host-cpu/onnxruntime"."""
    return f"{device}/{backend}"


def require_latencies(latencies: Mapping[str, Mapping[str, float]], key: str | None, how: str) -> None:
    """ValueError unless every option (name -> {latency_key: ms}) was measured at `key`: it names the options that
    were not, where they were measured, and `how` to measure them."""
    if key is None:
        raise ValueError("budget_ms needs to know where latency was measured: a device/backend key")
    missing = [name for name, measured in latencies.items() if key not in measured]
    if missing:
        measured = sorted(set().union(*latencies.values()))
        raise ValueError(f"no latency measured on {key!r} for {missing[:3]}{'...' if len(missing) > 3 else ''}; "
                         f"measured on: {measured or 'nothing'}. {how}")


@dataclass(frozen=True)
class Option:
    """One operating point as a budget sees it."""

    name: str
    macs: float  # per image, selector included
    ms: float | None = None  # per image where the budget is measured, selector included; None: not measured there
    top1: float | None = None  # None: not measured


@dataclass(frozen=True)
class Budget:
    """A per-image ceiling in MACs, in milliseconds measured at `where`, or both."""

    macs: float | None = None
    ms: float | None = None
    where: str | None = None  # the latency_key `ms` is measured at

    def fits(self, option: Option) -> bool:
        return (self.macs is None or option.macs <= self.macs) and (self.ms is None or option.ms <= self.ms)

    def __str__(self) -> str:
        parts = [f"{self.macs:.0f} MACs"] if self.macs is not None else []
        if self.ms is not None:
            parts.append(f"{self.ms:.3f} ms on {self.where}")
        return " and ".join(parts)


def admissible(options: Sequence[Option], budget: Budget) -> list[Option]:
    """The options within `budget`, best first; BudgetError naming the cheapest when none fits.

    Best is the most accurate, ties going to fewer MACs. Without measured
    accuracies, more compute is taken for more accuracy: the costliest first.
    """
    if not options:
        raise BudgetError("no operating point to choose from")
    if budget.ms is not None:
        unmeasured = [o.name for o in options if o.ms is None]
        if unmeasured:
            raise ValueError(f"no latency measured on {budget.where} for {unmeasured}")
    fitting = [o for o in options if budget.fits(o)]
    if not fitting:
        cheapest = min(options, key=lambda o: (o.ms, o.macs) if budget.ms is not None else (o.macs, 0.0))
        cost = Budget(cheapest.macs if budget.macs is not None else None, cheapest.ms if budget.ms is not None else None,
                      budget.where)
        raise BudgetError(f"no operating point within {budget}: the cheapest, {cheapest.name}, costs {cost}")
    if all(o.top1 is not None for o in fitting):
        return sorted(fitting, key=lambda o: (-o.top1, o.macs))
    return sorted(fitting, key=lambda o: -o.macs)


def frontier(options: Sequence[Option], cost: Callable[[Option], float]) -> list[Option]:
    """The options no other beats at `cost`, in their order: none costs no more and is no less accurate, and is
    better on one of the two. An option without a measured accuracy is never beaten, nor beats another."""
    def beaten(option: Option) -> bool:
        return option.top1 is not None and any(
            other.top1 is not None and cost(other) <= cost(option) and other.top1 >= option.top1
            and (cost(other) < cost(option) or other.top1 > option.top1)
            for other in options if other is not option
        )

    return [option for option in options if not beaten(option)]
