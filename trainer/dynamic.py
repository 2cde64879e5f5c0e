"""What every input-adaptive model reports at inference, whatever its family.

The exporter checks its bundles against this, and the evaluation reads MACs
and path choices from it, so all families answer in the same terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

__all__ = ["DynamicOutput", "block_path", "resize"]


@dataclass
class DynamicOutput:
    logits: Tensor  # (N, classes)
    paths: list[str]  # per sample, the static sub-network that ran
    macs: Tensor  # (N,) int64 MACs that actually ran, predictor or gates included
    blocks: Tensor | None = None  # (N, K) bool, residual blocks that ran; None where blocks are not dropped


def block_path(executed: Tensor) -> list[str]:
    """Name each sample's path by its executed blocks, e.g. "110101"."""
    return ["".join("1" if b else "0" for b in row) for row in executed.tolist()]


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear, half-pixel, no antialias: the variant every edge runtime implements alike."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
