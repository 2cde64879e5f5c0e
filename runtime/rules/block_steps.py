"""What the block rules (`policy`, `gated`) share: a backbone run block by block, each block run or skipped.

A skipped block still takes its shortcut: the identity, or a downsampling
block's shortcut (parameter-free pool-and-pad with zero MACs, or a projection).
A path is named by one character per block, `1` if it ran and `0` if it was
skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.format.fields import FieldReader, Graph
from runtime.rules.rule import BlockWalk

__all__ = ["BlockStep", "parse_steps", "walk_every_block", "block_roles"]


@dataclass(frozen=True)
class BlockStep:
    """Residual block k: the graph that runs it, and the graph of its shortcut when it is skipped."""

    run: str | None  # None: the block never ran on the calibration set and was left out
    skip: str | None  # None: the shortcut is the identity, which needs no call


def parse_steps(r: FieldReader, data: object, graphs: Mapping[str, Graph]) -> tuple[BlockStep, ...]:
    steps = []
    for i, entry in enumerate(r.typed(data, list, "dispatch.blocks")):
        entry = r.fields(entry, f"dispatch.blocks[{i}]", {"run", "skip"})
        steps.append(BlockStep(
            None if entry["run"] is None else r.graph(entry["run"], f"dispatch.blocks[{i}].run"),
            None if entry["skip"] is None else r.graph(entry["skip"], f"dispatch.blocks[{i}].skip"),
        ))
    if not steps:
        raise r.fail("dispatch.blocks", "must list at least one block")
    return tuple(steps)


def block_roles(stem: str, steps: Sequence[BlockStep]) -> dict[str, str]:
    """The stem's and each block's run and skip graphs, by role."""
    roles = {stem: "stem"}
    for step in steps:
        roles.update({graph: role for graph, role in ((step.run, "block"), (step.skip, "skip")) if graph is not None})
    return roles


def walk_every_block(
    stem: str, steps: Sequence[BlockStep], head: str | None, segments: Sequence[tuple[str, int]] = ()
) -> BlockWalk:
    """The walk of a sample that runs every block; `segments` are (graph, first block) of fused runs."""
    starts = [[g for g in (step.run, step.skip) if g is not None] for step in steps]
    for graph, first in segments:
        starts[first].append(graph)
    return BlockWalk(stem, tuple(map(tuple, starts)), tuple(step.run or step.skip for step in steps), head)
