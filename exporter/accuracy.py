"""Each operating point's top-1, measured at export on held-out labelled images: what budgets rank points by.

Measured through the written bundle where a backend for its target runs
here, so that the number describes what ships (an int8 bundle's own
accuracy); through the eager model otherwise (Core ML, TensorRT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import runtime
from exporter.graphs import Split
from runtime.format.manifest import Accuracy, Manifest, PointAccuracy

__all__ = ["labelled_samples", "measure_accuracy"]


def labelled_samples(config: dict, count: int) -> tuple[torch.Tensor, np.ndarray, str] | None:
    """The first `count` test images (normalized NCHW), their labels and a description; None where the
    checkpoint's dataset is not on this machine."""
    from trainer.data import load_split

    dataset_name = config["data"]["dataset"]
    try:
        dataset, _ = load_split(dataset_name, "test", data_root=config.get("data_root"))
    except (FileNotFoundError, ValueError):
        return None
    count = min(count, len(dataset))
    images, labels = zip(*(dataset[i] for i in range(count)))
    return torch.stack(images), np.asarray(labels), f"{dataset_name} test, first {count} images"


@torch.no_grad()
def measure_accuracy(
    bundle: Path, manifest: Manifest, split: Split, samples: tuple[torch.Tensor, np.ndarray, str],
    backend: str | None,
) -> Accuracy | None:
    """Top-1 of every operating point: the bundle on `backend`, or the eager model when `backend` is None;
    None when neither can force the points (no backend here, and the split has no per-path reference)."""
    images, labels, described = samples
    session = runtime.load(bundle, backend) if backend else None
    if session is None and not manifest.rule.takes_scale and split.path_reference is None:
        return None
    points = []
    for point in manifest.dispatch.operating_points(manifest.graphs):
        if session is not None:
            logits = session.run(images.numpy(), **point.options).logits
        elif point.kind == "scale":
            logits = split.reference(images, point.value).logits.numpy()
        else:
            logits = split.path_reference(images, point.name).logits.numpy()
        points.append(PointAccuracy(point.name, point.kind, point.value, float(np.mean(logits.argmax(1) == labels))))
    ran = f"the bundle on {session.backend.name}" if session else "the eager model"
    return Accuracy(f"{described}, run by {ran}", len(labels), tuple(points))
