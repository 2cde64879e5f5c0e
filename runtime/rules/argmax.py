"""`argmax` (DRNet): a selector scores the paths, and each sample runs the best one.

Every graph takes the same normalized image; any resize to the path's
resolution or feature-map scale happens inside the path's graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.format.fields import FieldReader, Graph
from runtime.rules.batching import groups
from runtime.rules.rule import Decision, GraphCall, Request, Rule
from runtime.rules.scored import ScoredPaths, check_scored_paths

__all__ = ["ArgmaxPath", "ArgmaxDispatch", "RULE"]


@dataclass(frozen=True)
class ArgmaxPath:
    """One way through the network, e.g. DRNet at one resolution."""

    name: str
    graph: str
    resolution: int | None = None  # informative: the input side this path runs at (DRNet)


@dataclass(frozen=True)
class ArgmaxDispatch(ScoredPaths):
    rule: ClassVar[str] = "argmax"
    selector: str  # graph emitting (N, len(paths)) scores
    paths: tuple[ArgmaxPath, ...]  # in score order
    reference: str

    def path_macs(self, graphs: Mapping[str, Graph]) -> dict[str, int]:
        return {p.name: graphs[self.selector].macs + graphs[p.graph].macs for p in self.paths}

    def graph_roles(self) -> dict[str, str]:
        return {self.selector: "selector", **{p.graph: "path" for p in self.paths}}


    def describe(self, graphs: Mapping[str, Graph]) -> str:
        return "\n".join(
            f"  path {name:10} {macs / 1e6:8.3f} MMACs (selector included)"
            for name, macs in self.path_macs(graphs).items()
        )


def parse(r: FieldReader, data: dict, graphs: Mapping[str, Graph], classes: int) -> ArgmaxDispatch:
    d = r.fields(data, "dispatch", {"rule", "selector", "paths", "reference"})
    selector = r.graph(d["selector"], "dispatch.selector")
    paths = []
    for i, entry in enumerate(r.typed(d["paths"], list, "dispatch.paths")):
        where = f"dispatch.paths[{i}]"
        entry = r.fields(entry, where, {"name", "graph"}, frozenset({"resolution"}))
        resolution = entry.get("resolution")
        paths.append(ArgmaxPath(
            name=r.text(entry["name"], f"{where}.name"),
            graph=r.graph(entry["graph"], f"{where}.graph"),
            resolution=None if resolution is None else r.count(resolution, f"{where}.resolution", 1),
        ))
    reference = r.graph(d["reference"], "dispatch.reference")
    check_scored_paths(r, paths, selector, reference, graphs, classes)
    return ArgmaxDispatch(selector, tuple(paths), reference)


def upgrade(r: FieldReader, data: dict) -> None:
    """Version 2 named the reference by its path; version 3 by its graph, as every rule does."""
    if "reference_path" in data:
        paths = r.typed(data.get("paths"), list, "dispatch.paths")
        graphs = {p.get("name"): p.get("graph") for p in paths if isinstance(p, dict)}
        data["reference"] = graphs[r.choice(data.pop("reference_path"), graphs, "dispatch.reference_path")]


class ArgmaxDispatcher:
    def __init__(self, d: ArgmaxDispatch, graphs: Mapping[str, Graph], classes: int) -> None:
        self.selector = d.selector
        self.graphs = [p.graph for p in d.paths]
        self.names = [p.name for p in d.paths]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.macs = np.array(list(d.path_macs(graphs).values()), dtype=np.int64)
        self.selector_macs = graphs[d.selector].macs
        self.classes = classes

    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        force = request.path
        if force is None and request.admitted is not None and len(request.admitted) == 1:
            # A budget that admits one path leaves the selector nothing to choose: it is skipped, and not counted.
            (only,) = request.admitted
            index = self.index[only]
            logits = call(self.graphs[index], batch)[0]
            return Decision(logits, [only] * len(batch), np.full(len(batch), self.macs[index] - self.selector_macs))
        scores = call(self.selector, batch)[0]
        if force is None:
            if request.admitted is not None:  # a budget: the best-scored path among those it admits
                scores = np.where([name in request.admitted for name in self.names], scores, -np.inf)
            choice = scores.argmax(axis=1)  # the first index on ties, as the format specifies
        elif force in self.index:
            choice = np.full(len(batch), self.index[force])
        else:
            raise ValueError(f"path {force!r} is not one of this bundle's paths {self.names}")
        logits = np.empty((len(batch), self.classes), dtype=np.float32)
        for index, rows in groups(choice):
            logits[rows] = call(self.graphs[index], batch[rows])[0]
        names = self.names
        return Decision(logits, [names[i] for i in choice.tolist()], self.macs[choice])


RULE = Rule(
    name="argmax",
    summary="a selector scores the paths; each sample runs the best one, one graph call per chosen path",
    section=ArgmaxDispatch,
    parse=parse,
    dispatcher=ArgmaxDispatcher,
    upgrade=upgrade,
)
