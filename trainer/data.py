"""Datasets: scikit-learn's digits placed on a canvas (offline default) and CIFAR-10.

Every dataset yields normalized float CHW tensors with integer labels, and
describes its preprocessing in a `DataInfo`, which travels into the checkpoint
config and from there into the bundle manifest.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets, transforms

__all__ = ["DataInfo", "DATASETS", "load_split", "digits_canvas", "raw_images"]

DATASETS = ("digits", "cifar10")

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

DIGITS_SEED = 0
DIGITS_CANVAS = 32
DIGITS_TEST_SIZE = 360
DIGITS_TRAIN_COPIES = 3
DIGITS_SIZES = (6, 32)  # rendered digit side in pixels, inclusive


@dataclass(frozen=True)
class DataInfo:
    dataset: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataInfo:
        return cls(
            dataset=data["dataset"],
            classes=tuple(data["classes"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            resolution=int(data["resolution"]),
        )


def digits_canvas(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images and labels: each 8x8 digit drawn at a random size and place.

    Small digits lose little at low resolution and large ones need more, so the
    choice of input resolution matters per image. The seed is fixed: the test
    split is identical on every machine and run. Callers get their own copy.
    """
    images, labels = _digits_canvas(split)
    return images.copy(), labels.copy()


@functools.cache
def _digits_canvas(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    rng = np.random.default_rng(DIGITS_SEED)
    order = rng.permutation(len(digits.target))
    chosen = order[:DIGITS_TEST_SIZE] if split == "test" else order[DIGITS_TEST_SIZE:]
    copies = 1 if split == "test" else DIGITS_TRAIN_COPIES
    # A separate stream per split keeps the test images independent of the train copies.
    rng = np.random.default_rng([DIGITS_SEED, 0 if split == "test" else 1])

    images, labels = [], []
    for _ in range(copies):
        for index in chosen:
            glyph = Image.fromarray((digits.images[index] * (255 / 16)).astype(np.uint8))
            side = int(rng.integers(DIGITS_SIZES[0], DIGITS_SIZES[1] + 1))
            glyph = np.asarray(glyph.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
            canvas = rng.normal(0.0, 0.04, (DIGITS_CANVAS, DIGITS_CANVAS)).astype(np.float32)
            top, left = rng.integers(0, DIGITS_CANVAS - side + 1, size=2)
            canvas[top : top + side, left : left + side] += glyph * rng.uniform(0.7, 1.0)
            images.append(np.clip(canvas, 0, 1))
            labels.append(int(digits.target[index]))
    gray = (np.stack(images) * 255).round().astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), np.asarray(labels, dtype=np.int64)


@functools.cache
def _digits_info() -> DataInfo:
    train, _ = digits_canvas("train")
    scaled = train.astype(np.float64) / 255
    mean = round(float(scaled.mean()), 4)
    std = round(float(scaled.std()), 4)
    return DataInfo("digits", tuple(str(d) for d in range(10)), (mean,) * 3, (std,) * 3, DIGITS_CANVAS)


def _normalize_uint8(images: np.ndarray, info: DataInfo) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (x - mean) / std


def _cifar10(split: str, root: Path, transform) -> Dataset:
    """CIFAR-10 from an ImageFolder tree (root/{train,test}/<class>/) or torchvision's batches."""
    if (root / split).is_dir():
        return datasets.ImageFolder(str(root / split), transform=transform)
    if (root / "cifar-10-batches-py").is_dir():
        return datasets.CIFAR10(str(root), train=split == "train", transform=transform, download=False)
    raise FileNotFoundError(
        f"no CIFAR-10 under {root}: expected {root / split}/<class>/*.jpg (ImageFolder) "
        f"or {root / 'cifar-10-batches-py'} (torchvision batches)"
    )


def load_split(
    dataset: str,
    split: str,
    *,
    data_root: str | Path | None = None,
    augment: bool = False,
    subset: int | None = None,
) -> tuple[Dataset, DataInfo]:
    """A split of `dataset` as normalized tensors, and how it was normalized.

    `subset` keeps a fixed, seeded random sample of that many items.
    """
    if dataset == "digits":
        info = _digits_info()
        images, labels = digits_canvas(split)
        data: Dataset = TensorDataset(_normalize_uint8(images, info), torch.from_numpy(labels))
    elif dataset == "cifar10":
        if data_root is None:
            raise ValueError("dataset 'cifar10' needs --data-root DIR (ImageFolder tree or torchvision batches)")
        steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment else []
        steps += [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
        data = _cifar10(split, Path(data_root), transforms.Compose(steps))
        info = DataInfo("cifar10", tuple(data.classes), CIFAR10_MEAN, CIFAR10_STD, 32)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if subset is not None and subset < len(data):
        generator = torch.Generator().manual_seed(DIGITS_SEED)
        data = Subset(data, torch.randperm(len(data), generator=generator)[:subset].tolist())
    return data, info


def raw_images(dataset: str, split: str, *, data_root: str | Path | None = None, limit: int | None = None):
    """uint8 NHWC images and labels, before any preprocessing: what a device camera hands the runtime."""
    if dataset == "digits":
        images, labels = digits_canvas(split)
    elif dataset == "cifar10":
        if data_root is None:
            raise ValueError("dataset 'cifar10' needs a data root")
        data = _cifar10(split, Path(data_root), transform=None)
        count = len(data) if limit is None else min(limit, len(data))
        picks = np.random.default_rng(DIGITS_SEED).permutation(len(data))[:count]
        pairs = [data[int(i)] for i in picks]
        images = np.stack([np.asarray(image.convert("RGB")) for image, _ in pairs])
        labels = np.asarray([label for _, label in pairs], dtype=np.int64)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
