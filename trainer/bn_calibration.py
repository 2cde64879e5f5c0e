"""BN calibration (post-statistics): re-estimate BatchNorm running statistics for a fixed sub-network.

Shared weights trained under many configurations leave running statistics that
fit none of them exactly; Resizable networks (Sec. 3.2, Table 5) recompute them
per configuration from a few thousand training images. Only BN buffers change.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from trainer.macs import eval_mode

__all__ = ["DEFAULT_IMAGES", "calibrate_batchnorm"]

DEFAULT_IMAGES = 2000


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, batches: Iterable[Tensor]) -> None:
    """Reset every BatchNorm's running statistics, then average them over `batches` in train mode.

    `momentum=None` makes the running statistics a cumulative average of the
    batches' statistics: each batch weighs the same, so pass batches of equal
    size for every image to weigh the same. Modes and momenta are restored after.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with eval_mode(module):
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        try:
            for images in batches:
                module(images)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
