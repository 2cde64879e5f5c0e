"""The names of a block walk's per-block graphs, written by the exporter's block splits (BlockDrop, URNet) and
looked up by position where a latency table is read (`LatencyTable.kept_block_saving`, the trainer's costs)."""

from __future__ import annotations

__all__ = ["block_graph", "skip_graph"]


def block_graph(k: int) -> str:
    """The graph that runs residual block k."""
    return f"block{k}"


def skip_graph(k: int) -> str:
    """The graph of block k's shortcut when the block is skipped, where the shortcut is not the identity."""
    return f"skip{k}"
