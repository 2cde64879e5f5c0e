"""Datasets: scikit-learn's digits placed on a canvas (offline default), CIFAR-10 and ImageNet.

Every dataset yields normalized float CHW tensors with integer labels, and
describes its preprocessing in a `DataInfo`, which travels into the checkpoint
config and from there into the bundle manifest.

Digits and CIFAR-10 are decoded once and held in memory as uint8;
normalization and the training augmentation (padded random crop, horizontal
flip) run on whole batches of tensors. On a 2-core CPU, decoding JPEGs and
per-image PIL transforms in data workers would otherwise take the cores the
model trains on. ImageNet does not fit in memory: it is read from its
ImageFolder tree by data workers, with torchvision's standard transforms.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

__all__ = ["DataInfo", "DATASETS", "ImageTensors", "imagenet_folder", "load_split", "digits_canvas", "raw_images"]

DATASETS = ("digits", "cifar10", "imagenet")

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CROP_PADDING = 4  # He et al. (2016), Sec. 4.2: 4 pixels padded on each side, a random 32x32 crop, a random flip

# torchvision's ImageNet recipe: RandomResizedCrop(224) and a flip to train; resize the short side
# to 256 and take the central 224 to evaluate (the 0.875 crop of He et al. and every paper here).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESOLUTION = 224
IMAGENET_RESIZE = 256
IMAGENET_SPLITS = {"train": "train", "test": "val"}  # the ImageNet layout's folder for each split

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
    crop: float | None = None  # evaluation's central crop, as a fraction of the short side (runtime.format.manifest)

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
            crop=data.get("crop"),
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


class ImageTensors(Dataset):
    """uint8 HWC images in memory, served as normalized float CHW tensors, augmented a batch at a time.

    The DataLoader fetches a batch through `__getitems__`, so one crop-and-flip
    draw covers the batch. Draws come from torch's global generator, which a
    resumed run restores (trainer/resume.py).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, info: DataInfo, *, augment: bool = False) -> None:
        self.images = torch.tensor(images).permute(0, 3, 1, 2).contiguous()  # N, C, H, W uint8
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(info.std).view(1, -1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        images = self.images[indices]
        if self.augment:
            images = random_crop_and_flip(images, CIFAR10_CROP_PADDING)
        # Divide, subtract, divide: torchvision's ToTensor and Normalize, and the runtime's preprocessing.
        normalized = (images.float() / 255 - self.mean) / self.std
        return list(zip(normalized.unbind(), self.labels[indices].unbind()))


def random_crop_and_flip(images: Tensor, padding: int) -> Tensor:
    """Each image zero-padded by `padding`, cropped back to its size at a random offset, and flipped with p 0.5."""
    count, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (count, 1))
    left = torch.randint(0, 2 * padding + 1, (count, 1))
    flip = torch.rand(count, 1) < 0.5
    columns = torch.arange(width)
    columns = left + torch.where(flip, columns.flip(0), columns)  # a flip reads the crop's columns backwards
    rows = top + torch.arange(height)
    picked = padded[torch.arange(count)[:, None, None], :, rows[:, :, None], columns[:, None, :]]  # N, H, W, C
    return picked.permute(0, 3, 1, 2).contiguous()


@functools.cache
def _decoded_cifar10(split: str, root: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """CIFAR-10 from an ImageFolder tree (root/{train,test}/<class>/), torchvision's batches, or arrays
    (root/{train,test}.npz: `images` uint8 NHWC, `labels`, `classes`; scripts/gpu_check.py writes synthetic ones),
    as uint8 NHWC.

    Read-only: it is cached for the process, and callers index copies out of it.
    """
    if (root / f"{split}.npz").is_file():
        with np.load(root / f"{split}.npz", allow_pickle=False) as arrays:
            images, labels = arrays["images"], arrays["labels"].astype(np.int64)
            classes = [str(name) for name in arrays["classes"]]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
            raise ValueError(f"{root / f'{split}.npz'}: images must be uint8 (N, H, W, 3) with one label each, "
                             f"got {images.dtype} {images.shape} and {len(labels)} labels")
    elif (root / split).is_dir():
        folder = datasets.ImageFolder(str(root / split))
        images = np.stack([np.asarray(folder.loader(path).convert("RGB")) for path, _ in folder.samples])
        labels, classes = np.asarray(folder.targets, dtype=np.int64), folder.classes
    elif (root / "cifar-10-batches-py").is_dir():
        batches = datasets.CIFAR10(str(root), train=split == "train", download=False)
        images, labels, classes = batches.data, np.asarray(batches.targets, dtype=np.int64), batches.classes
    else:
        raise FileNotFoundError(
            f"no CIFAR-10 under {root}: expected {root / split}/<class>/*.jpg (ImageFolder), "
            f"{root / 'cifar-10-batches-py'} (torchvision batches) or {root / split}.npz (arrays)"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, tuple(classes)


def imagenet_folder(split: str, root: Path, *, augment: bool = False) -> tuple[Dataset, DataInfo]:
    """An ImageFolder tree in the ImageNet layout, root/{train,val}/<class>/<image>, with the standard transforms."""
    folder = root / IMAGENET_SPLITS[split]
    if not folder.is_dir():
        raise FileNotFoundError(f"no ImageNet {split} split under {root}: expected {folder}/<class>/<image>")
    crop = IMAGENET_RESOLUTION / IMAGENET_RESIZE  # the runtime's equivalent of Resize(256) + CenterCrop(224)
    if augment:
        steps = [transforms.RandomResizedCrop(IMAGENET_RESOLUTION), transforms.RandomHorizontalFlip(),
                 transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        transform = transforms.Compose(steps)
    else:
        transform = evaluation_transform(IMAGENET_RESOLUTION, crop, IMAGENET_MEAN, IMAGENET_STD)
    data = datasets.ImageFolder(str(folder), transform=transform)
    return data, DataInfo("imagenet", tuple(data.classes), IMAGENET_MEAN, IMAGENET_STD, IMAGENET_RESOLUTION, crop)


def evaluation_transform(resolution: int, crop: float | None, mean: Sequence[float],
                         std: Sequence[float]) -> transforms.Compose:
    """How a PIL image is evaluated: Resize(round(resolution / crop)) + CenterCrop(resolution) (ImageNet's 256 and
    224), or without a crop a resize to the square; then ToTensor and Normalize. The runtime's `pil-bilinear` resize
    (runtime/preprocess.py) computes the same, so that a bundle sees on the device what the model saw in evaluation."""
    if crop is None:
        steps = [transforms.Resize((resolution, resolution))]
    else:
        steps = [transforms.Resize(round(resolution / crop)), transforms.CenterCrop(resolution)]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean, std)])


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
        data: Dataset = ImageTensors(images, labels, info)  # digits train unaugmented: the canvas draw varies them
    elif dataset == "cifar10":
        if data_root is None:
            raise ValueError("dataset 'cifar10' needs --data-root DIR (ImageFolder tree or torchvision batches)")
        images, labels, classes = _decoded_cifar10(split, Path(data_root))
        info = DataInfo("cifar10", classes, CIFAR10_MEAN, CIFAR10_STD, 32)
        data = ImageTensors(images, labels, info, augment=augment)
    elif dataset == "imagenet":
        if data_root is None:
            raise ValueError("dataset 'imagenet' needs --data-root DIR (an ImageFolder tree: train/ and val/)")
        data, info = imagenet_folder(split, Path(data_root), augment=augment)
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
        images, labels, _ = _decoded_cifar10(split, Path(data_root))
        count = len(labels) if limit is None else min(limit, len(labels))
        picks = np.random.default_rng(DIGITS_SEED).permutation(len(labels))[:count]
        images, labels = images[picks], labels[picks]
    elif dataset == "imagenet":  # images of every size: one array cannot hold them
        raise ValueError("raw ImageNet images differ in size; read them from the ImageFolder tree one by one")
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
