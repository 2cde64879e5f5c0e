"""The dispatch rules: how one sample finds its way through a bundle's graphs.

Each rule is written once, over graphs that are plain callables on numpy
arrays, so every backend shares it. A dispatcher returns the sample's logits,
the name of its path and the MACs it spent, and adds each graph's time to
`timings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from runtime.manifest import BlockDispatch, Dispatch, Manifest

__all__ = ["Dispatcher", "make_dispatcher"]

GraphFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
Outcome = tuple[np.ndarray, str, int]


class TimedGraphs:
    """Run graphs by name, adding each call's wall time to `timings`."""

    def __init__(self, graphs: dict[str, GraphFn], timings: dict[str, float]) -> None:
        self.graphs = graphs
        self.timings = timings

    def __call__(self, name: str, *inputs: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        outputs = self.graphs[name](inputs)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return outputs


class ArgmaxDispatcher:
    """DRNet and Resizable: the selector scores the paths, the best one runs."""

    def __init__(self, manifest: Manifest) -> None:
        self.dispatch: Dispatch = manifest.dispatch
        self.macs = [manifest.path_macs(p) for p in self.dispatch.paths]

    def __call__(self, run: TimedGraphs, sample: np.ndarray, scale: float | None) -> Outcome:
        scores = run(self.dispatch.selector, sample)[0]
        index = int(np.argmax(scores[0]))
        path = self.dispatch.paths[index]
        return run(path.graph, sample)[0][0], path.name, self.macs[index]


class BlockDispatcher:
    """BlockDrop (policy up front) and URNet (a gate before every block)."""

    def __init__(self, manifest: Manifest) -> None:
        self.dispatch: BlockDispatch = manifest.dispatch
        self.graph_macs = {name: graph.macs for name, graph in manifest.graphs.items()}
        self.segments = {segment.first: segment for segment in self.dispatch.segments}
        self.cached = {cached.path: cached.graph for cached in self.dispatch.cached_paths}
        self.left_out = np.array([step.run is None for step in self.dispatch.blocks])

    def __call__(self, run: TimedGraphs, sample: np.ndarray, scale: float | None) -> Outcome:
        if self.dispatch.rule == "gated":
            return self._gated(run, sample, np.array([scale], dtype=np.float32))
        return self._policy(run, sample)

    def _policy(self, run: TimedGraphs, sample: np.ndarray) -> Outcome:
        d = self.dispatch
        keep = (run(d.selector, sample)[0][0] >= 0.5) & ~self.left_out
        path = "".join("1" if k else "0" for k in keep)
        used = [d.selector]
        if path in self.cached:
            used.append(self.cached[path])
            logits = run(self.cached[path], sample)[0]
        else:
            used.append(d.stem)
            features = run(d.stem, sample)[0]
            k = 0
            while k < len(d.blocks):
                segment = self.segments.get(k)
                if segment and keep[segment.first : segment.last + 1].all():
                    graph, k = segment.graph, segment.last + 1
                else:
                    graph, k = (d.blocks[k].run if keep[k] else d.blocks[k].skip), k + 1
                if graph is not None:  # an identity shortcut needs no call
                    used.append(graph)
                    features = run(graph, features)[0]
            used.append(d.head)
            logits = run(d.head, features)[0]
        return logits[0], path, sum(self.graph_macs[g] for g in used)

    def _gated(self, run: TimedGraphs, sample: np.ndarray, scale: np.ndarray) -> Outcome:
        d = self.dispatch
        features, gate = run(d.stem, sample, scale)
        used, path = [d.stem], []
        for k, step in enumerate(d.blocks):
            is_open = bool(gate.reshape(-1)[0] > 0)
            path.append("1" if is_open else "0")
            graph = step.run if is_open else step.skip
            used.append(graph)
            outputs = run(graph, features, scale)
            if k + 1 < len(d.blocks):
                features, gate = outputs
            else:
                logits = outputs[0]
        return logits[0], "".join(path), sum(self.graph_macs[g] for g in used)


Dispatcher = ArgmaxDispatcher | BlockDispatcher


def make_dispatcher(manifest: Manifest) -> Dispatcher:
    return ArgmaxDispatcher(manifest) if manifest.dispatch.rule == "argmax" else BlockDispatcher(manifest)
