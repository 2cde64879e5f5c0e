"""A quantized bundle against its fp32 self and the eager model, on held-out images.

Against the fp32 bundle: does each image take the same path, and get the same
top-1, and how much top-1 accuracy is lost. Against eager: how far the logits
moved, on the images that took eager's path. The exporter refuses a bundle
that loses more accuracy, or moves logits further, than stated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import runtime
from runtime.format.manifest import QuantizedCheck
from trainer.dynamic import DynamicOutput

__all__ = ["QuantizationError", "TOLERANCES", "MAX_TOP1_DROP", "compare_to_fp32", "failures"]

# Logits may differ from eager by this x max(1, the largest |eager logit|). int8: the bundles of
# benchmarks/quantization.py moved by at most 0.05-0.06 of that scale (CIFAR-10 URNet, BlockDrop) and 0.14
# (digits DRNet, whose logits reach 25); the top-1 drop is the stricter gate.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.25}
MAX_TOP1_DROP = 0.01  # the goal: under 1 pp of top-1 against the fp32 bundle


class QuantizationError(RuntimeError):
    """The quantized bundle lost more than it may; the message has the numbers."""


@torch.no_grad()
def compare_to_fp32(
    quantized: Path, fp32: Path, images: np.ndarray, labels: np.ndarray | None, *, backend: str, fp32_backend: str,
    reference: Callable[[torch.Tensor, float | None], DynamicOutput], scales: tuple[float | None, ...], tolerance: float,
) -> QuantizedCheck:
    """Run `images` (normalized float32 NCHW) through both bundles and eager at every scale of `scales`.

    Agreements pool all scales; top-1 against `labels` is taken at the last
    scale (URNet's S = 1, where its top-1 is reported).
    """
    low, full = runtime.load(quantized, backend), runtime.load(fp32, fp32_backend)
    same_path, same_top1, max_diff, logit_scale = [], [], 0.0, 1.0
    for scale in scales:
        ours, theirs = low.run(images, scale=scale), full.run(images, scale=scale)
        expected = reference(torch.from_numpy(images), scale)
        same_path += [a == b for a, b in zip(ours.paths, theirs.paths)]
        same_top1 += list(ours.logits.argmax(1) == theirs.logits.argmax(1))
        as_eager = np.array([a == b for a, b in zip(ours.paths, expected.paths)])
        if as_eager.any():
            max_diff = max(max_diff, float(np.abs(ours.logits - expected.logits.numpy())[as_eager].max()))
        logit_scale = max(logit_scale, float(expected.logits.abs().max()))
    top1 = top1_fp32 = None
    if labels is not None:
        top1, top1_fp32 = float(np.mean(ours.logits.argmax(1) == labels)), float(np.mean(theirs.logits.argmax(1) == labels))
    return QuantizedCheck(
        images=len(images), path_agreement=float(np.mean(same_path)), top1_agreement=float(np.mean(same_top1)),
        top1_fp32=top1_fp32, top1=top1, max_abs_diff=max_diff, tolerance=tolerance * logit_scale,
    )


def failures(check: QuantizedCheck, max_top1_drop: float) -> list[str]:
    """What the check found beyond the allowed, in words with the numbers; empty when the bundle may ship."""
    found = []
    if check.top1 is not None and check.top1_fp32 - check.top1 > max_top1_drop:
        found.append(f"top-1 fell from {check.top1_fp32:.2%} (fp32) to {check.top1:.2%} on {check.images} held-out "
                     f"images, more than the {max_top1_drop:.1%} allowed")
    if check.max_abs_diff > check.tolerance:
        found.append(f"logits moved by up to {check.max_abs_diff:.3g} from eager, beyond the tolerance "
                     f"{check.tolerance:.3g}")
    return found
