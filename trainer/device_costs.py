"""The cost term of training in a device's measured milliseconds, read from its latency table.

The papers train their decisions against MACs. `python -m trainer --cost
latency --costs TABLE` trains them against what the runtime will run on the
device instead: each decision costs the table's prediction for the graph calls
it makes (runtime/format/latency_table.py, `LatencyTable.predicted_ms`):
preprocessing, the session's own cost, each graph call at its batch-1 median,
and the dispatch of every call after the first. Those predictions came within
10% of `Session.run` for 93% of operating points and 90% of images of the
trained bundles (benchmarks/results/operating_points.md).

The table is measured before training, on a bundle whose graphs have the
shapes training will export (`python -m runtime.profile costs`): latency
depends on shapes, not weights. Each family reads it here, in its own terms:

- DRNet: each resolution's path, the predictor included;
- BlockDrop and URNet: a path's latency is linear in the blocks it runs
  (`BlockLatency`). Where the table holds the block walk's forced paths (every
  block dropped, each block alone: `costs` measures them through `Session.run`),
  they give it as the runtime runs one image, a graph call per block or URNet's
  one conditional graph alike. Otherwise it is predicted from the graph rows: a
  run block costs its graph and its call, a dropped one its skip graph where it
  has one (a downsampling shortcut; URNet's skip graphs also carry the next
  gate). Paths the exporter later caches whole or fuses only run faster than
  this, so the cost is an upper bound the policy lowers by dropping blocks whose
  calls cost most;
- Resizable: each configuration's graph, the ResizeLearner included.

Graph names are the exporter's (exporter/splits): a table without a graph a
family needs is refused with the graph named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from runtime.format.block_names import block_graph, skip_graph
from runtime.format.latency_table import LatencyTable, read_latency_table

__all__ = ["COSTS", "DeviceCosts", "BlockLatency", "read_device_costs"]

COSTS = {
    "macs": "the papers' cost: multiply-accumulates of conv and linear layers",
    "latency": "milliseconds on a device, from its latency table (--costs; python -m runtime.profile costs)",
}


@dataclass(frozen=True)
class BlockLatency:
    """A block walk's latency, linear in the blocks it runs: `base_ms` with every block dropped, plus
    `block_ms[k]` for running block k; `full_ms` is the static full model through `Session.run`. `measured`:
    read from the walk's forced paths, as `Session.run` ran them, rather than predicted from the graph rows."""

    base_ms: float
    block_ms: tuple[float, ...]
    full_ms: float
    measured: bool = False

    def share(self, executed: Tensor) -> Tensor:
        """Each sample's path latency over the static model's, (N, K) executed blocks (0/1 or gate values)."""
        weights = torch.tensor(self.block_ms, dtype=executed.dtype, device=executed.device)
        return (self.base_ms + executed @ weights) / self.full_ms


@dataclass(frozen=True)
class DeviceCosts:
    table: LatencyTable
    source: Path

    @property
    def static_ms(self) -> float:
        """The static full model through `Session.run`: what every share is a share of."""
        return self.table.static.median_ms

    def run_ms(self, calls: Mapping[str, float]) -> float:
        """The table's prediction for a run making `calls` (graph -> calls per image)."""
        missing = sorted(set(calls) - set(self.table.graphs))
        if missing:
            raise ValueError(
                f"{self.source}: no graph {', '.join(map(repr, missing))} in the table ({self.table.bundle}); measure "
                f"a bundle with every candidate as its own graph: python -m runtime.profile costs --recipe R --target T"
            )
        return self.table.predicted_ms(calls)

    def paths_ms(self, paths: Sequence[Mapping[str, float]]) -> list[float]:
        return [self.run_ms(calls) for calls in paths]

    def blocks(self, count: int, *, fixed: Sequence[str]) -> BlockLatency:
        """A block walk over `count` blocks, from its forced paths where the table measured them
        (`LatencyTable.walk_ms`); else predicted: the `fixed` graphs every path calls (selector,
        stem, head), then "block{k}", or for a dropped block "skip{k}" where the split has one."""
        walk = self.table.walk_ms(count)
        if walk is not None:
            return BlockLatency(*walk, self.static_ms, measured=True)
        dropped = {name: 1.0 for name in fixed}
        dropped |= {skip_graph(k): 1.0 for k in range(count) if skip_graph(k) in self.table.graphs}
        base = self.run_ms(dropped)
        block_ms = []
        for k in range(count):
            calls = {name: n for name, n in dropped.items() if name != skip_graph(k)} | {block_graph(k): 1.0}
            block_ms.append(self.run_ms(calls) - base)
        return BlockLatency(base, tuple(block_ms), self.static_ms)

    def describe(self) -> dict:
        """What the checkpoint records of the costs it trained against, and the exporter checks."""
        t = self.table
        return {"cost": "latency", "table": str(self.source), "recipe": t.recipe, "target": t.target,
                "device": t.device, "backend": t.backend, "static_ms": self.static_ms}


def read_device_costs(path: str | Path, recipe: str) -> DeviceCosts:
    """The latency table at `path` as training costs for `recipe`; a table measured for another recipe is
    refused by name (its graphs have other shapes)."""
    table = read_latency_table(path)
    if table.recipe != recipe:
        made = f"recipe {table.recipe}" if table.recipe else "a bundle of no recorded recipe (a table before version 4)"
        raise ValueError(f"{path}: measured for {made}, not {recipe}; make one with: python -m runtime.profile costs "
                         f"--recipe {recipe} --target {table.target or 'TARGET'} --device {table.device} --out {path}")
    return DeviceCosts(table, Path(path))
