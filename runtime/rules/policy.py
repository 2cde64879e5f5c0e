"""`policy` (BlockDrop): a policy graph decides, once per image, which residual blocks run.

Per sample: `keep = selector(image) >= 0.5`, with left-out blocks forced off.
A path compiled whole (a cached path) maps the image to logits in one call.
Otherwise the stem runs, then per block its `run` graph if kept or its `skip`
graph if not (nothing for an identity shortcut), a fused segment replacing a
run of kept blocks where the plan has one, and finally the head.

In a batch, samples on the same cached path share one call; the others walk
the blocks together, so each block, skip or segment graph is called once
over the subset that takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from runtime.format.fields import FieldReader, Graph
from runtime.rules.batching import parse_path, path_strings
from runtime.rules.block_steps import BlockStep, block_roles, parse_steps, walk_every_block
from runtime.rules.rule import BlockWalk, Decision, GraphCall, OperatingPoint, Request, Rule

__all__ = ["Segment", "CachedPath", "PlanCalibration", "PolicyDispatch", "RULE"]


@dataclass(frozen=True)
class Segment:
    """Blocks first..last fused into one graph, used when all of them run."""

    graph: str
    first: int
    last: int


@dataclass(frozen=True)
class CachedPath:
    """A whole block path compiled as one graph: image in, logits out."""

    path: str
    graph: str
    frequency: float  # share of calibration images that took it


@dataclass(frozen=True)
class PlanCalibration:
    images: int
    usage: tuple[float, ...]  # per block, share of images that ran it
    coverage: float  # share of images whose path is cached


@dataclass(frozen=True)
class PolicyDispatch:
    rule: ClassVar[str] = "policy"
    selector: str  # graph emitting (N, K) keep-probabilities
    stem: str  # image to features
    head: str  # features to logits
    blocks: tuple[BlockStep, ...]
    segments: tuple[Segment, ...]
    cached_paths: tuple[CachedPath, ...]
    calibration: PlanCalibration | None
    reference: str

    def path_graphs(self, path: str) -> list[str]:
        """The graphs one sample on `path` calls, in order, selector first."""
        cached = next((c.graph for c in self.cached_paths if c.path == path), None)
        if cached is not None:
            return [self.selector, cached]
        keep = [c == "1" for c in path]
        segments = {s.first: s for s in self.segments}
        called, k = [self.selector, self.stem], 0
        while k < len(self.blocks):
            segment = segments.get(k)
            if segment and all(keep[segment.first : segment.last + 1]):
                graph, k = segment.graph, segment.last + 1
            else:
                graph, k = (self.blocks[k].run if keep[k] else self.blocks[k].skip), k + 1
            if graph is not None:
                called.append(graph)
        return [*called, self.head]

    def graph_roles(self) -> dict[str, str]:
        return {
            self.selector: "selector", **block_roles(self.stem, self.blocks), self.head: "head",
            **{s.graph: "segment" for s in self.segments}, **{c.graph: "cached path" for c in self.cached_paths},
        }

    def operating_points(self, graphs: Mapping[str, Graph]) -> tuple[OperatingPoint, ...]:
        """The cached paths: a path walked block by block costs calls that no budget should have to guess."""
        return tuple(
            OperatingPoint(c.path, "path", macs=sum(graphs[g].macs for g in self.path_graphs(c.path)))
            for c in self.cached_paths
        )

    def full_path(self) -> str:
        return "1" * len(self.blocks)

    def block_walk(self) -> BlockWalk:
        return walk_every_block(self.stem, self.blocks, self.head, [(s.graph, s.first) for s in self.segments])

    def worst_case(self, graphs: Mapping[str, Graph]) -> tuple[int, str]:
        per_block = sum(max(graphs[g].macs if g else 0 for g in (step.run, step.skip)) for step in self.blocks)
        return graphs[self.selector].macs + graphs[self.stem].macs + per_block + graphs[self.head].macs, "every block"

    def describe(self, graphs: Mapping[str, Graph]) -> str:
        lines = [f"  policy dispatch over {len(self.blocks)} blocks; full model {graphs[self.reference].macs / 1e6:.3f} MMACs"]
        if self.calibration:
            left_out = [k for k, step in enumerate(self.blocks) if step.run is None]
            lines.append(
                f"  plan from {self.calibration.images} calibration images: {len(self.cached_paths)} cached paths "
                f"covering {self.calibration.coverage:.0%}, {len(self.segments)} fused segments, "
                f"blocks left out {left_out or 'none'}"
            )
        return "\n".join(lines)


def parse(r: FieldReader, data: dict, graphs: Mapping[str, Graph], classes: int) -> PolicyDispatch:
    d = r.fields(
        data, "dispatch",
        {"rule", "selector", "stem", "head", "blocks", "segments", "cached_paths", "calibration", "reference"},
    )
    steps = parse_steps(r, d["blocks"], graphs)
    count = len(steps)
    selector = r.graph(d["selector"], "dispatch.selector")
    if graphs[selector].outputs[0].shape != (count,):
        raise r.fail("dispatch.selector", f"{selector!r} must emit {count} keep-probabilities, one per block")
    segments = []
    for i, entry in enumerate(r.typed(d["segments"], list, "dispatch.segments")):
        where = f"dispatch.segments[{i}]"
        entry = r.fields(entry, where, {"graph", "first", "last"})
        first, last = r.count(entry["first"], f"{where}.first"), r.count(entry["last"], f"{where}.last")
        if not first < last < count:
            raise r.fail(where, f"blocks {first}..{last} are not a run of at least two of the {count} blocks")
        segments.append(Segment(r.graph(entry["graph"], f"{where}.graph"), first, last))
    cached = []
    for i, entry in enumerate(r.typed(d["cached_paths"], list, "dispatch.cached_paths")):
        where = f"dispatch.cached_paths[{i}]"
        entry = r.fields(entry, where, {"path", "graph", "frequency"})
        path = r.text(entry["path"], f"{where}.path")
        try:
            parse_path(path, count)
        except ValueError as error:
            raise r.fail(f"{where}.path", str(error)) from None
        graph = r.graph(entry["graph"], f"{where}.graph")
        r.logits(graph, classes)
        cached.append(CachedPath(path, graph, r.number(entry["frequency"], f"{where}.frequency")))
    calibration = None
    if d["calibration"] is not None:
        c = r.fields(d["calibration"], "dispatch.calibration", {"images", "usage", "coverage"})
        calibration = PlanCalibration(
            r.count(c["images"], "dispatch.calibration.images", 1),
            r.floats(c["usage"], "dispatch.calibration.usage", count),
            r.number(c["coverage"], "dispatch.calibration.coverage"),
        )
    head = r.graph(d["head"], "dispatch.head")
    r.logits(head, classes)
    reference = r.graph(d["reference"], "dispatch.reference")
    r.logits(reference, classes)
    return PolicyDispatch(
        selector, r.graph(d["stem"], "dispatch.stem"), head, steps, tuple(segments), tuple(cached), calibration, reference
    )


class PolicyDispatcher:
    def __init__(self, d: PolicyDispatch, graphs: Mapping[str, Graph], classes: int) -> None:
        self.d = d
        self.left_out = np.array([step.run is None for step in self.d.blocks])
        self.cached = {c.path: c.graph for c in self.d.cached_paths}
        self.segments = {s.first: s for s in self.d.segments}
        self.graph_macs = {name: graph.macs for name, graph in graphs.items()}
        self.classes = classes
        self.plans: dict[str, tuple[list[str], int]] = {}  # path -> (graphs between stem and head, MACs)

    def plan(self, path: str) -> tuple[list[str], int]:
        if path not in self.plans:
            called = self.d.path_graphs(path)
            self.plans[path] = (called[2:-1], sum(self.graph_macs[g] for g in called))
        return self.plans[path]

    def __call__(self, call: GraphCall, batch: np.ndarray, request: Request) -> Decision:
        force = request.path
        if force is None and request.admitted is not None and len(request.admitted) == 1:
            # A budget that admits one path leaves the selector nothing to choose: it is skipped, and not counted.
            (only,) = request.admitted
            keep = np.broadcast_to(parse_path(only, len(self.d.blocks)), (len(batch), len(self.d.blocks)))
            return self._run(call, batch, keep, self.graph_macs[self.d.selector])
        probabilities = call(self.d.selector, batch)[0]
        keep = probabilities >= 0.5
        if force is None:
            keep &= ~self.left_out
            if request.admitted is not None:
                keep = self._within(keep, probabilities, request.admitted)
        else:
            forced = parse_path(force, len(self.d.blocks))
            if force not in self.cached and (forced & self.left_out).any():  # a cached path runs whole, in one graph
                left_out = np.flatnonzero(self.left_out).tolist()
                raise ValueError(f"path {force!r} runs blocks {left_out}, which this bundle's plan left out")
            keep = np.broadcast_to(forced, keep.shape)
        return self._run(call, batch, keep, 0)

    def _run(self, call: GraphCall, batch: np.ndarray, keep: np.ndarray, uncounted: int) -> Decision:
        """Each sample through the blocks `keep` marks; its MACs are its path's, less `uncounted` (a skipped
        selector's)."""
        paths = path_strings(keep)
        samples: dict[str, list[int]] = {}
        for i, path in enumerate(paths):
            samples.setdefault(path, []).append(i)
        logits = np.empty((len(batch), self.classes), dtype=np.float32)
        uncached: list[int] = []
        for path, rows in samples.items():
            graph = self.cached.get(path)
            if graph is None:
                uncached += rows
            else:
                chosen = slice(None) if len(samples) == 1 else np.array(rows)  # one path: no copy
                logits[chosen] = call(graph, batch[chosen])[0]
        if len(uncached) == len(batch):
            logits = self._walk(call, batch, keep, paths)
        elif uncached:
            rows = np.array(sorted(uncached))
            logits[rows] = self._walk(call, batch[rows], keep[rows], [paths[i] for i in rows])
        macs = np.fromiter((self.plan(p)[1] for p in paths), dtype=np.int64, count=len(paths)) - uncounted
        return Decision(logits, paths, macs)

    @staticmethod
    def _within(keep: np.ndarray, probabilities: np.ndarray, admitted: frozenset[str]) -> np.ndarray:
        """Images whose policy path is not admitted take the admitted path their policy rates most likely."""
        paths = path_strings(keep)
        outside = np.array([path not in admitted for path in paths])
        if not outside.any():
            return keep
        options = sorted(admitted)
        masks = np.stack([parse_path(path, keep.shape[1]) for path in options])  # (P, K) bool
        p = np.clip(probabilities[outside], 1e-7, 1 - 1e-7)
        likelihood = np.log(p) @ masks.T + np.log1p(-p) @ (~masks).T  # (images outside, P)
        keep = keep.copy()
        keep[outside] = masks[likelihood.argmax(axis=1)]
        return keep

    def _walk(self, call: GraphCall, images: np.ndarray, keep: np.ndarray, paths: list[str]) -> np.ndarray:
        """Logits of samples whose paths are not cached: stem, blocks, head, each graph once per subset."""
        features = call(self.d.stem, images)[0]
        if len(set(paths)) == 1:  # one path: follow its plan, with no per-block bookkeeping
            for graph in self.plan(paths[0])[0]:
                features = call(graph, features)[0]
            return call(self.d.head, features)[0]
        # pending[k]: (sample rows, their features) of the groups that reach block k next
        pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {0: [(np.arange(len(images)), features)]}
        for k, step in enumerate(self.d.blocks):
            if k not in pending:
                continue
            rows, x = _merge(pending.pop(k))
            kept = keep[rows, k]
            steps = [(kept, step.run, k + 1), (~kept, step.skip, k + 1)]  # (which rows, graph, next block)
            segment = self.segments.get(k)
            if segment:
                fused = keep[rows, k : segment.last + 1].all(axis=1)
                steps = [(fused, segment.graph, segment.last + 1), (kept & ~fused, step.run, k + 1), steps[1]]
            for mask, graph, after in steps:
                selected = np.count_nonzero(mask)
                if not selected:
                    continue
                subset_rows, subset = (rows, x) if selected == len(rows) else (rows[mask], x[mask])
                out = subset if graph is None else call(graph, subset)[0]  # None: an identity shortcut
                pending.setdefault(after, []).append((subset_rows, out))
        rows, x = _merge(pending.pop(len(self.d.blocks)))
        logits = np.empty((len(images), self.classes), dtype=np.float32)
        logits[rows] = call(self.d.head, x)[0]
        return logits


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([rows for rows, _ in parts]), np.concatenate([x for _, x in parts])


RULE = Rule(
    name="policy",
    summary="a policy graph picks the blocks once per image; cached whole paths, fused segments or per-block graphs run them",
    section=PolicyDispatch,
    parse=parse,
    dispatcher=PolicyDispatcher,
    since=2,
)
