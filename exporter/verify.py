"""Parity of a written bundle against PyTorch eager: same path per sample, logits within tolerance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import runtime
from exporter.accuracy import labelled_samples
from trainer.dynamic import DynamicOutput

__all__ = ["Parity", "ParityError", "check_parity", "verification_samples"]

# Logits may differ by this much times max(1, the largest |eager logit|): a plain 1e-4 for logits up to
# 1, scaled for networks whose logits are larger (float32 rounding grows with the values summed).
TOLERANCE = 1e-4
SINGLE_IMAGES = 4  # also run alone, at every point: a dispatcher may take one image another way (URNet's conditional graph)


class ParityError(RuntimeError):
    """The bundle does not reproduce the eager model."""


@dataclass(frozen=True)
class Parity:
    samples: int
    path_mismatches: int
    max_abs_diff: float
    tolerance: float  # relative: the allowed difference is tolerance * logit_scale
    backend: str
    logit_scale: float = 1.0  # max(1, the largest |eager logit|)

    @property
    def within_tolerance(self) -> bool:
        return self.max_abs_diff <= self.tolerance * self.logit_scale

    def summary(self) -> str:
        return (
            f"{self.samples} samples on {self.backend}: {self.samples - self.path_mismatches}/{self.samples} "
            f"same path, max |logit diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e} x "
            f"max(1, |logit|) = {self.tolerance * self.logit_scale:.1e})"
        )


def verification_samples(config: dict, count: int) -> torch.Tensor:
    """Test-split images when the dataset can be loaded here, else seeded noise."""
    labelled = labelled_samples(config, count)
    if labelled is not None:
        return labelled[0]
    side = config["data"]["resolution"]
    return torch.randn(count, len(config["data"]["mean"]), side, side, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def check_parity(
    bundle: Path,
    reference: Callable[[torch.Tensor, float | None], DynamicOutput],
    samples: torch.Tensor,
    *,
    scales: tuple[float | None, ...] = (None,),
    path_reference: Callable[[torch.Tensor, str], DynamicOutput] | None = None,
    tolerance: float = TOLERANCE,
    backend: str | None = None,
) -> Parity:
    """Run `samples` through the bundle at every scale and compare with `reference` (PyTorch eager).

    With `path_reference`, every operating point's path is also forced and
    compared, so paths the dispatch never picks on these samples are checked too.
    The first SINGLE_IMAGES samples also run one at a time, at every point.
    """
    session = runtime.load(bundle, backend)
    runs = [(reference(samples, scale), {"scale": scale}) for scale in scales]
    if path_reference is not None:
        manifest = session.manifest
        runs += [(path_reference(samples, point.name), point.options)
                 for point in manifest.dispatch.operating_points(manifest.graphs)]
    runs = [(expected, options, slice(None)) for expected, options in runs] + [
        (DynamicOutput(expected.logits[i : i + 1], expected.paths[i : i + 1], expected.macs[i : i + 1]), options,
         slice(i, i + 1))
        for expected, options in runs for i in range(min(SINGLE_IMAGES, len(samples)))
    ]
    mismatches, max_diff, checked = 0, 0.0, 0
    scale = max([1.0, *(float(expected.logits.abs().max()) for expected, _, _ in runs)])
    for expected, options, images in runs:
        result = session.run(samples[images].numpy().astype(np.float32), **options)
        same = np.array([a == b for a, b in zip(expected.paths, result.paths)])
        diffs = np.abs(expected.logits.numpy() - result.logits)[same]
        mismatches += int((~same).sum())
        max_diff = max(max_diff, float(diffs.max()) if diffs.size else 0.0)
        checked += len(result.paths)
        wrong_macs = same & (result.macs != expected.macs.numpy())
        if wrong_macs.any():
            i = int(np.argmax(wrong_macs))
            raise ParityError(
                f"{bundle}: sample {i} (path {result.paths[i]}, {options}) costs {result.macs[i]} MACs "
                f"by the manifest but {int(expected.macs[i])} in eager"
            )
    parity = Parity(checked, mismatches, max_diff, tolerance, session.backend.describe(), scale)
    if parity.path_mismatches or not parity.within_tolerance:
        raise ParityError(f"{bundle}: bundle disagrees with PyTorch eager: {parity.summary()}")
    return parity
