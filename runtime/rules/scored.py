"""What the rules whose paths a selector scores (argmax, budget) check alike when they parse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from runtime.format.fields import FieldReader, Graph
from runtime.rules.rule import OperatingPoint

__all__ = ["ScoredPaths", "check_scored_paths", "costliest_path"]


class _Path(Protocol):
    name: str
    graph: str


def check_scored_paths(
    r: FieldReader, paths: Sequence[_Path], selector: str | None, reference: str, graphs: Mapping[str, Graph], classes: int
) -> None:
    """Paths listed and named once, one score per path from the selector, logits from each path, the reference among them."""
    if not paths:
        raise r.fail("dispatch.paths", "must list at least one path")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise r.fail("dispatch.paths", f"path names repeat: {names}")
    if selector is not None:
        scores = graphs[selector].outputs[0].shape
        if scores != (len(paths),):
            raise r.fail("dispatch.selector", f"{selector!r} emits scores of shape {list(scores)}, not [{len(paths)}] for the listed paths")
    for path in paths:
        r.logits(path.graph, classes)
    if reference not in {p.graph for p in paths}:
        raise r.fail("dispatch.reference", f"{reference!r} is not the graph of any path")


class ScoredPaths:
    """The section methods the scored rules share: a path per operating point, the reference's path the full one.

    A mixin of their sections, which provide `paths`, `reference` and `path_macs(graphs)`.
    """

    def operating_points(self, graphs: Mapping[str, Graph]) -> tuple[OperatingPoint, ...]:
        return tuple(OperatingPoint(name, "path", macs=macs) for name, macs in self.path_macs(graphs).items())

    def full_path(self) -> str:
        return next(p.name for p in self.paths if p.graph == self.reference)

    def block_walk(self) -> None:
        return None

    def worst_case(self, graphs: Mapping[str, Graph]) -> tuple[int, str]:
        return costliest_path(self.path_macs(graphs))


def costliest_path(path_macs: Mapping[str, int]) -> tuple[int, str]:
    """The most MACs any path costs, and that path: a scored rule's worst case."""
    name, macs = max(path_macs.items(), key=lambda item: item[1])
    return macs, name
