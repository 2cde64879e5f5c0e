"""Running a backbone block by block: the loop the block-dropping families share.

A skipped block still takes its shortcut (identity, or a downsampling block's
pool-and-pad or projection), as in BlockDrop's and URNet's ResNets. Evaluation runs
each block only on the samples that keep it, so dropped blocks cost nothing;
training blends block and shortcut with a (possibly soft) gate instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.backbone import CifarResNet
from trainer.macs import count_macs, eval_mode

__all__ = ["BlockCosts", "block_costs", "run_blocks", "blend_blocks"]

# (block index, features entering it) -> per-sample decision
Decide = Callable[[int, Tensor], Tensor]


@dataclass(frozen=True)
class BlockCosts:
    """MACs of the backbone's pieces at one input resolution."""

    stem: int
    head: int
    run: tuple[int, ...]  # per block, when it runs
    skip: tuple[int, ...]  # per block, when only its shortcut runs

    @property
    def full(self) -> int:
        return self.stem + self.head + sum(self.run)

    def macs(self, executed: Tensor) -> Tensor:
        """Per-sample MACs for a (N, K) boolean matrix of executed blocks."""
        run = torch.tensor(self.run, dtype=torch.int64, device=executed.device)
        skip = torch.tensor(self.skip, dtype=torch.int64, device=executed.device)
        return self.stem + self.head + torch.where(executed.bool(), run, skip).sum(dim=1)


def block_costs(backbone: CifarResNet, resolution: int) -> BlockCosts:
    x = torch.zeros(1, backbone.in_channels, resolution, resolution)
    with eval_mode(backbone), torch.no_grad():
        stem = count_macs(backbone.stem, x)
        x = backbone.stem(x)
        run, skip = [], []
        for block in backbone.blocks:
            run.append(count_macs(block, x))
            skip.append(count_macs(block.shortcut, x))
            x = block(x)
        return BlockCosts(stem, count_macs(backbone.head, x), tuple(run), tuple(skip))


def run_blocks(backbone: CifarResNet, x: Tensor, decide: Decide) -> tuple[Tensor, Tensor]:
    """Logits and the (N, K) executed-block matrix; a block runs only on the samples that keep it."""
    x = backbone.stem(x)
    executed = []
    for k, block in enumerate(backbone.blocks):
        keep = decide(k, x).bool()
        executed.append(keep)
        if keep.all():
            x = block(x)
        elif not keep.any():
            x = block.shortcut(x)
        else:
            kept = block(x[keep])
            out = kept.new_empty((len(x), *kept.shape[1:]))
            out[keep] = kept
            out[~keep] = block.shortcut(x[~keep])
            x = out
    return backbone.head(x), torch.stack(executed, dim=1)


def blend_blocks(backbone: CifarResNet, x: Tensor, gate: Decide) -> Tensor:
    """Masked execution for training: each block's output is g * block(x) + (1 - g) * shortcut(x).

    With a binary g this equals `run_blocks`; a straight-through or soft g lets
    gradients reach whatever produced it.
    """
    x = backbone.stem(x)
    for k, block in enumerate(backbone.blocks):
        g = gate(k, x).view(-1, 1, 1, 1).to(x.dtype)
        x = g * block(x) + (1 - g) * block.shortcut(x)
    return backbone.head(x)
