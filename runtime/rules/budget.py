"""`budget` (Resizable networks): paths carry accuracy and measured cost; a budget decides which may run.

Without a selector, a budget is answered by a table pick (Resizable-NAS,
Sec. 3.3): every image runs the most accurate path within it, with no graph
spent on choosing. With a selector (the ResizeLearner, Sec. 3.5), each image
runs the path the selector scores best among those within the budget; the
selector's own cost counts against it. No budget admits every path. A budget
that admits one path skips the selector, whose MACs then do not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from runtime.format.fields import FieldReader, Graph
from runtime.rules.batching import groups
from runtime.rules.rule import Decision, GraphCall, Request, Rule
from runtime.rules.scored import ScoredPaths, check_scored_paths
from runtime.serving.costs import Budget, Option, admissible, require_latencies

__all__ = ["BudgetPath", "BudgetDispatch", "RULE"]

MEASURE_HINT = (
    "To add latencies: export with `--configurations all --no-selector`, run `python -m runtime.profile table` on the "
    "device, merge it with `python -m trainer.resizable_nas CHECKPOINT --profile TABLE.json`, and export again"
)


@dataclass(frozen=True)
class BudgetPath:
    """One exported configuration: its graph, and what the lookup table measured of it."""

    name: str
    graph: str
    factors: tuple[float, ...]  # informative: the spatial configuration, one scale factor per stage
    accuracy: float  # top-1 on the test split, after BN calibration
    latency_ms: dict[str, float] = field(default_factory=dict)  # "device/backend" -> median ms at batch 1


@dataclass(frozen=True)
class BudgetDispatch(ScoredPaths):
    rule: ClassVar[str] = "budget"
    selector: str | None  # graph emitting (N, len(paths)) scores, or None: table picks only
    paths: tuple[BudgetPath, ...]  # in score order
    reference: str
    selector_latency_ms: dict[str, float] = field(default_factory=dict)  # the selector's own, where measured

    def selector_macs(self, graphs: Mapping[str, Graph]) -> int:
        return graphs[self.selector].macs if self.selector else 0

    def path_macs(self, graphs: Mapping[str, Graph]) -> dict[str, int]:
        overhead = self.selector_macs(graphs)
        return {p.name: overhead + graphs[p.graph].macs for p in self.paths}

    def graph_roles(self) -> dict[str, str]:
        return {**({self.selector: "selector"} if self.selector else {}), **{p.graph: "path" for p in self.paths}}


    def describe(self, graphs: Mapping[str, Graph]) -> str:
        chooser = f"selector {self.selector!r} per image" if self.selector else "table pick, no selector"
        lines = [f"  {chooser}; a budget in MACs or ms admits the paths within it"]
        for path, macs in zip(self.paths, self.path_macs(graphs).values()):
            latency = "  ".join(f"{k} {v:.3f} ms" for k, v in path.latency_ms.items())
            lines.append(f"  path {path.name:14} {macs / 1e6:8.3f} MMACs  top-1 {path.accuracy:6.2%}  {latency}")
        return "\n".join(lines)


def _latencies(r: FieldReader, value: object, where: str) -> dict[str, float]:
    table = r.typed(value, dict, where)
    latencies = {r.text(k, f"{where} key"): r.number(v, f"{where}[{k!r}]") for k, v in table.items()}
    for key, ms in latencies.items():
        if not ms > 0:
            raise r.fail(f"{where}[{key!r}]", f"must be a positive number of milliseconds, got {ms}")
    return latencies


def parse(r: FieldReader, data: dict, graphs: Mapping[str, Graph], classes: int) -> BudgetDispatch:
    d = r.fields(data, "dispatch", {"rule", "selector", "paths", "reference", "selector_latency_ms"})
    selector = None if d["selector"] is None else r.graph(d["selector"], "dispatch.selector")
    paths = []
    for i, entry in enumerate(r.typed(d["paths"], list, "dispatch.paths")):
        where = f"dispatch.paths[{i}]"
        entry = r.fields(entry, where, {"name", "graph", "factors", "accuracy", "latency_ms"})
        factors = r.typed(entry["factors"], list, f"{where}.factors")
        accuracy = r.number(entry["accuracy"], f"{where}.accuracy")
        if not 0 <= accuracy <= 1:
            raise r.fail(f"{where}.accuracy", f"must lie in [0, 1], got {accuracy}")
        paths.append(BudgetPath(
            name=r.text(entry["name"], f"{where}.name"),
            graph=r.graph(entry["graph"], f"{where}.graph"),
            factors=r.floats(factors, f"{where}.factors", len(factors)),
            accuracy=accuracy,
            latency_ms=_latencies(r, entry["latency_ms"], f"{where}.latency_ms"),
        ))
    reference = r.graph(d["reference"], "dispatch.reference")
    check_scored_paths(r, paths, selector, reference, graphs, classes)
    latency = _latencies(r, d["selector_latency_ms"], "dispatch.selector_latency_ms")
    return BudgetDispatch(selector, tuple(paths), reference, latency)


class BudgetDispatcher:
    def __init__(self, d: BudgetDispatch, graphs: Mapping[str, Graph], classes: int) -> None:
        self.d = d
        self.graphs = [p.graph for p in self.d.paths]
        self.index = {p.name: i for i, p in enumerate(self.d.paths)}
        self.graph_macs = [graphs[g].macs for g in self.graphs]
        self.selector_macs = self.d.selector_macs(graphs)
        self.path_macs = np.array(self.graph_macs, dtype=np.int64) + self.selector_macs
        self.classes = classes
        self.unbudgeted = self.admitted(Request())  # computed once: most calls carry no budget

    def admitted(self, request: Request) -> list[int]:
        """Path indices within the request's budget, most accurate first (all paths when there is none)."""
        key, overhead_ms = request.latency_key, 0.0
        if request.budget_ms is not None:
            require_latencies({p.name: p.latency_ms for p in self.d.paths}, key, MEASURE_HINT)
            if self.d.selector:
                if key not in self.d.selector_latency_ms:
                    raise ValueError(
                        f"the selector's latency was not measured on {key!r} (measured on: "
                        f"{sorted(self.d.selector_latency_ms) or 'nothing'}); budget it in MACs, or: {MEASURE_HINT}"
                    )
                overhead_ms = self.d.selector_latency_ms[key]
        options = [
            Option(p.name, int(macs), p.latency_ms[key] + overhead_ms if request.budget_ms is not None else None,
                   p.accuracy)
            for p, macs in zip(self.d.paths, self.path_macs)
        ]
        chosen = admissible(options, Budget(request.budget_macs, request.budget_ms, key))
        return [self.index[o.name] for o in chosen]

    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        if request.path is not None and request.path not in self.index:
            raise ValueError(f"path {request.path!r} is not one of this bundle's paths {list(self.index)}")
        budgeted = request.budget_macs is not None or request.budget_ms is not None
        admitted = self.admitted(request) if budgeted and request.path is None else self.unbudgeted
        if len(admitted) == 1 and request.path is None:
            # One admitted path leaves the selector nothing to choose: it is skipped, and not counted.
            (index,) = admitted
            logits = call(self.graphs[index], batch)[0]
            return Decision(logits, [self.d.paths[index].name] * len(batch),
                            np.full(len(batch), self.graph_macs[index], dtype=np.int64))
        scores = call(self.d.selector, batch)[0] if self.d.selector is not None else None
        if request.path is not None:
            choice = np.full(len(batch), self.index[request.path])
        elif scores is None:
            choice = np.full(len(batch), admitted[0])  # a table pick
        elif len(admitted) == len(self.graphs):
            choice = scores.argmax(axis=1)  # the first index on ties, as the format specifies
        else:
            masked = np.full_like(scores, -np.inf)
            masked[:, admitted] = scores[:, admitted]
            choice = masked.argmax(axis=1)
        logits = np.empty((len(batch), self.classes), dtype=np.float32)
        for index, rows in groups(choice):
            logits[rows] = call(self.graphs[index], batch[rows])[0]
        macs = self.path_macs[choice]
        return Decision(logits, [self.d.paths[i].name for i in choice.tolist()], macs)


RULE = Rule(
    name="budget",
    summary="paths carry accuracy and measured cost; a budget admits paths, and a table pick or a selector chooses among them",
    section=BudgetDispatch,
    parse=parse,
    dispatcher=BudgetDispatcher,
    takes_budget=True,
    since=4,
)
