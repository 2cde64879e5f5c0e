"""Calibration images for the export plan: a .npy batch, or a split of the checkpoint's own dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.format.manifest import Preprocessing
from runtime.preprocess import prepare

__all__ = ["load_calibration"]

DEFAULT_IMAGES = 512


def load_calibration(spec: str, config: dict) -> torch.Tensor:
    """Normalized float32 NCHW images from `spec`.

    `spec` is a .npy file (uint8 NHWC of any size, or normalized float32 NCHW),
    or `train[:N]` / `test[:N]`: the first N images (default 512) of that split
    of the dataset the checkpoint was trained on.
    """
    data = config["data"]
    pre = Preprocessing(data["resolution"], tuple(data["mean"]), tuple(data["std"]), crop=data.get("crop"))
    if spec.endswith(".npy"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: calibration file not found")
        try:
            images = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: not a plain .npy array ({error})") from None
        try:
            return torch.from_numpy(prepare(images, pre))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    split, _, count = spec.partition(":")
    if split not in ("train", "test") or (count and not count.isdigit()):
        raise ValueError(f"--calibration {spec!r}: expected FILE.npy, train[:N] or test[:N]")
    from trainer.data import load_split

    dataset, _ = load_split(data["dataset"], split, data_root=config.get("data_root"))
    count = min(int(count or DEFAULT_IMAGES), len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])
