"""What the block-dropping splits share: chains of blocks as static graphs, and the calibration plan.

Per-block graphs pay a call each, and on small blocks the call overhead eats
the saving. The plan, measured on calibration images, fuses runs of blocks
that always run into one segment graph, leaves out blocks that never run,
and compiles the most frequent complete paths as single graphs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.backbone import CifarResNet

__all__ = ["BlockChain", "BlockPlan", "plan_blocks", "choose_cached_paths", "fused_segments", "block_inputs"]


class BlockChain(nn.Module):
    """Blocks first..last of `backbone`, each run or bypassed by its shortcut per `keep`, optionally with stem and head.

    It holds only the modules it uses, so an exported graph carries no other weights.
    """

    def __init__(self, backbone: CifarResNet, keep: str, first: int, last: int, *, stem: bool, head: bool) -> None:
        super().__init__()
        self.stem = backbone.stem if stem else nn.Identity()
        self.blocks = nn.ModuleList(backbone.blocks[k] for k in range(first, last + 1))
        self.runs = [keep[k] == "1" for k in range(first, last + 1)]
        self.head = backbone.head if head else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block, runs in zip(self.blocks, self.runs):
            x = block(x) if runs else block.shortcut(x)
        return self.head(x)


@torch.no_grad()
def block_inputs(backbone: CifarResNet, image: Tensor) -> list[Tensor]:
    """The features entering each block, and leaving the last, for one example image."""
    x = backbone.stem(image)
    features = [x]
    for block in backbone.blocks:
        x = block(x)
        features.append(x)
    return features


def choose_cached_paths(counts: Counter, k: int) -> list[tuple[str, int]]:
    """The k most frequent paths; ties go to the cheaper path (fewer blocks), then lexical order."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0].count("1"), item[0]))
    return ranked[:k]


def fused_segments(usage: list[float]) -> list[tuple[int, int]]:
    """Maximal runs of at least two consecutive blocks that ran on every calibration image."""
    runs, start = [], None
    for k, share in enumerate([*usage, 0.0]):
        if share >= 1.0 and start is None:
            start = k
        elif share < 1.0 and start is not None:
            if k - start >= 2:
                runs.append((start, k - 1))
            start = None
    return runs


@dataclass(frozen=True)
class BlockPlan:
    images: int
    usage: tuple[float, ...]
    cached: tuple[tuple[str, float], ...]  # (path, frequency)
    segments: tuple[tuple[int, int], ...]
    left_out: tuple[int, ...]  # blocks that never ran

    @property
    def coverage(self) -> float:
        return sum(frequency for _, frequency in self.cached)


def plan_blocks(executed: Tensor, cache_paths: int) -> BlockPlan:
    """The plan from an (N, K) matrix of blocks executed on calibration images."""
    images = len(executed)
    usage = executed.float().mean(0).tolist()
    counts = Counter("".join("1" if b else "0" for b in row) for row in executed.tolist())
    cached = tuple((path, count / images) for path, count in choose_cached_paths(counts, cache_paths))
    left_out = tuple(k for k, share in enumerate(usage) if share == 0.0)
    return BlockPlan(images, tuple(usage), cached, tuple(fused_segments(usage)), left_out)
