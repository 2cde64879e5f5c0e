"""What every dispatch rule provides, so that the manifest reader, the session and the profiler need no `if rule ==`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from runtime.manifest import FieldReader, Graph, Manifest

__all__ = ["Rule", "Section", "Dispatcher", "Decision", "GraphCall", "Request"]

# Runs graph `name` on a batch of any size (the session chunks it to the bundle's max_batch).
GraphCall = Callable[..., list[np.ndarray]]


@dataclass(frozen=True)
class Decision:
    """What a dispatcher hands back for a batch, in input order."""

    logits: np.ndarray  # (N, classes) float32
    paths: list[str]  # per sample, the name of the path it took
    macs: np.ndarray  # (N,) int64, selector and gates included


@dataclass(frozen=True)
class Request:
    """What the caller asked of one `Session.run`, beyond the images."""

    scale: np.ndarray | None = None  # (N,) compute scale S per sample, for rules that take it
    path: str | None = None  # a path every sample takes whatever the selector says (the selector still runs)
    budget_macs: float | None = None  # per-image ceiling, selector included, for rules that take a budget
    budget_ms: float | None = None  # per-image ceiling on latency measured at `latency_key`
    latency_key: str | None = None  # "device/backend" where the session runs
    allowed: frozenset[str] | None = None  # paths within the caller's budget (runtime/budgets.py); None: all


class Section(Protocol):
    """A rule's part of the manifest (`dispatch`): a frozen dataclass the rule module defines."""

    rule: ClassVar[str]
    reference: str  # graph of the static full model, image to logits: the baseline of every speedup

    def probe_paths(self, graphs: Mapping[str, Graph]) -> dict[str, int]:
        """The paths worth timing one by one, with the MACs of one sample taking each."""

    def worst_case(self, graphs: Mapping[str, Graph]) -> tuple[int, str]:
        """The most MACs any input can cost, and the path that costs it."""

    def describe(self, graphs: Mapping[str, Graph]) -> str:
        """What a user should know of the split, in a few indented lines."""


class Dispatcher(Protocol):
    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        """Run `batch` (normalized NCHW) through its paths, one graph call per group of samples that share one."""


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str  # one line, for the docs and the CLI
    section: type  # the Section dataclass
    parse: Callable[[FieldReader, dict, Mapping[str, Graph], int], Section]  # (reader, data, graphs, classes)
    dispatcher: Callable[[Manifest], Dispatcher]
    takes_scale: bool = False  # Session.run takes a compute scale S in [0, 1]
    takes_budget: bool = False  # answers budget_macs / budget_ms from its own section; else runtime/budgets.py
    since: int = 1  # the first format_version that has this rule
    # Rewrites a version 1 or 2 section, in place, into version 3's terms; None where nothing changed.
    upgrade: Callable[[FieldReader, dict], None] | None = None
