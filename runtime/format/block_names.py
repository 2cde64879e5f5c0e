"""The names of a block walk's graphs, written by the exporter's block splits (BlockDrop, URNet) and looked up
where a latency table is read (`LatencyTable.kept_block_saving`, the trainer's costs, the evidence benchmarks)."""

from __future__ import annotations

__all__ = ["CONDITIONAL_GRAPH", "block_graph", "skip_graph"]

CONDITIONAL_GRAPH = "conditional"  # the whole walk in one graph, each block under a conditional, where exported


def block_graph(k: int) -> str:
    """The graph that runs residual block k."""
    return f"block{k}"


def skip_graph(k: int) -> str:
    """The graph of block k's shortcut when the block is skipped, where the shortcut is not the identity."""
    return f"skip{k}"
