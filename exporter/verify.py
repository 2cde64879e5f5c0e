"""Parity of a written bundle against PyTorch eager: same path per sample, logits within tolerance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import runtime

__all__ = ["Parity", "ParityError", "check_parity", "verification_samples"]

TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The bundle does not reproduce the eager model."""


@dataclass(frozen=True)
class Parity:
    samples: int
    path_mismatches: int
    max_abs_diff: float
    tolerance: float
    backend: str

    def summary(self) -> str:
        return (
            f"{self.samples} samples on {self.backend}: {self.samples - self.path_mismatches}/{self.samples} "
            f"same path, max |logit diff| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"
        )


def verification_samples(config: dict, count: int) -> torch.Tensor:
    """Test-split images when the dataset can be loaded here, else seeded noise."""
    from trainer.data import load_split

    try:
        dataset, _ = load_split(config["data"]["dataset"], "test", data_root=config.get("data_root"))
        return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    except (FileNotFoundError, ValueError):
        side = config["data"]["resolution"]
        return torch.randn(count, len(config["data"]["mean"]), side, side, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def check_parity(bundle: Path, model: nn.Module, samples: torch.Tensor, *, tolerance: float = TOLERANCE) -> Parity:
    session = runtime.load(bundle)
    expected = model.infer(samples)
    result = session.run(samples.numpy().astype(np.float32))
    same = np.array([a == b for a, b in zip(expected.paths, result.paths)])
    diffs = np.abs(expected.logits.numpy() - result.logits)[same]
    max_diff = float(diffs.max()) if diffs.size else 0.0
    parity = Parity(len(samples), int((~same).sum()), max_diff, tolerance, session.backend.describe())
    if parity.path_mismatches or parity.max_abs_diff > tolerance:
        raise ParityError(f"{bundle}: bundle disagrees with PyTorch eager: {parity.summary()}")
    if not np.array_equal(result.macs, expected.macs.numpy()):
        raise ParityError(f"{bundle}: manifest MACs {result.macs[:4]}... differ from eager {expected.macs[:4].tolist()}...")
    return parity
