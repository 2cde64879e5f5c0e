"""What every dispatch rule provides, so that nothing outside runtime/rules asks which rule a bundle has.

The manifest reader, the session, the budgets, the profiler, the exporter's
int8 routing and the benchmarks all go through this interface: a section
says which graph plays which part, which operating points it offers and
what they cost, and its rule's dispatcher runs a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from runtime.format.fields import FieldReader, Graph

__all__ = [
    "Rule", "Section", "Dispatcher", "Decision", "GraphCall", "Request", "OperatingPoint", "BlockWalk", "ROLES",
    "graphs_in_role",
]

# Runs graph `name` on a batch of any size (the session chunks it to the bundle's max_batch).
GraphCall = Callable[..., list[np.ndarray]]

# The parts a graph can play in dispatch (Section.graph_roles).
ROLES = ("selector", "stem", "block", "skip", "segment", "head", "path", "cached path", "reference")


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
    admitted: frozenset[str] | None = None  # the paths a budget admits (runtime/serving/budgets.py); None: all


@dataclass(frozen=True)
class OperatingPoint:
    """What a user can ask `Session.run` for: a path every image takes, or URNet's compute scale S."""

    name: str
    kind: str  # "path" | "scale"
    value: float | None = None  # S, for a scale point
    macs: int | None = None  # per image, selector included; None where it depends on the image (a scale)

    @property
    def options(self) -> dict[str, object]:
        """The `Session.run` keyword arguments that ask for this point."""
        return {"scale": self.value} if self.kind == "scale" else {"path": self.name}


@dataclass(frozen=True)
class BlockWalk:
    """A block rule's graphs in the order a sample that runs every block meets them.

    `starts[k]`: the graphs that take the features entering block k (its run
    and skip graphs, and fused segments that start there).
    """

    stem: str
    starts: tuple[tuple[str, ...], ...]
    through: tuple[str | None, ...]  # per block, the graph whose output enters the next one (None: an identity)
    head: str | None  # None where the last block's graphs end in the head


class Section(Protocol):
    """A rule's part of the manifest (`dispatch`): a frozen dataclass the rule module defines."""

    rule: ClassVar[str]
    reference: str  # graph of the static full model, image to logits: the baseline of every speedup

    def graph_roles(self) -> dict[str, str]:
        """Each graph's part in dispatch, one of ROLES; "reference" only for a static full model no path runs."""

    def operating_points(self, graphs: Mapping[str, Graph]) -> tuple[OperatingPoint, ...]:
        """What `Session.run` can be asked for: the points a budget chooses among, and the profiler times."""

    def full_path(self) -> str:
        """The name of the path that runs the whole network, as `Session.run(path=...)` takes it."""

    def block_walk(self) -> BlockWalk | None:
        """The graphs a sample running every block meets; None for rules without blocks."""

    def worst_case(self, graphs: Mapping[str, Graph]) -> tuple[int, str]:
        """The most MACs any input can cost, and the path that costs it."""

    def describe(self, graphs: Mapping[str, Graph]) -> str:
        """What a user should know of the split, in a few indented lines."""


def graphs_in_role(section: Section, role: str) -> list[str]:
    """The graphs that play `role` in `section`, e.g. its selector (none for URNet, whose gates ride in the blocks)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {list(ROLES)}")
    return [graph for graph, part in section.graph_roles().items() if part == role]


class Dispatcher(Protocol):
    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        """Run `batch` (normalized NCHW) through its paths, one graph call per group of samples that share one."""


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str  # one line, for the docs and the CLI
    section: type  # the Section dataclass
    parse: Callable[[FieldReader, dict, Mapping[str, Graph], int], Section]  # (reader, data, graphs, classes)
    dispatcher: Callable[[Section, Mapping[str, Graph], int], Dispatcher]  # (section, graphs, classes)
    takes_scale: bool = False  # Session.run takes a compute scale S in [0, 1]
    takes_budget: bool = False  # answers budget_macs / budget_ms from its own section; else runtime/serving/budgets.py
    since: int = 1  # the first format_version that has this rule
    # Rewrites a version 1 or 2 section, in place, into version 3's terms; None where nothing changed.
    upgrade: Callable[[FieldReader, dict], None] | None = None
