"""Turn what a caller hands `Session.run` into the float32 NCHW batch the graphs expect."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from runtime.format.manifest import Preprocessing

__all__ = ["prepare", "center_crop", "resize_bilinear"]


def center_crop(images: np.ndarray, fraction: float) -> np.ndarray:
    """The central square of side round(fraction x the short side) of uint8 NHWC images (at least 1 pixel).

    Offsets round down: (height - side) // 2 from the top, likewise from the left.
    """
    height, width = images.shape[1:3]
    side = max(1, int(fraction * min(height, width) + 0.5))
    top, left = (height - side) // 2, (width - side) // 2
    return images[:, top : top + side, left : left + side]


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize float NHWC images to size x size.

    Half-pixel centres without antialiasing, the same arithmetic as
    torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
    """
    def axis(in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(size, dtype=np.float64) + 0.5) * (in_size / size) - 0.5, 0.0)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, (source - low).astype(np.float32)

    top, bottom, dy = axis(images.shape[1])
    left, right, dx = axis(images.shape[2])
    rows = images[:, top] * (1 - dy)[None, :, None, None] + images[:, bottom] * dy[None, :, None, None]
    return rows[:, :, left] * (1 - dx)[None, None, :, None] + rows[:, :, right] * dx[None, None, :, None]


@lru_cache(maxsize=8)
def _statistics(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(pre.mean, dtype=np.float32), np.asarray(pre.std, dtype=np.float32)


def prepare(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Validate `images` and return normalized float32 NCHW at the bundle's resolution, the whole batch at once.

    Accepts float32 NCHW, already normalized, at that resolution; or uint8 NHWC
    RGB of any size, which is cropped, resized and normalized as the manifest says.
    """
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array, got {type(images).__name__}")
    channels = len(pre.mean)
    if images.ndim != 4:
        raise ValueError(
            f"images must be a 4-D batch (float32 NCHW or uint8 NHWC), got shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if images.dtype == np.float32:
        expected = (channels, pre.resolution, pre.resolution)
        if images.shape[1:] != expected:
            raise ValueError(
                f"float32 images must be normalized NCHW of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.shape}; pass uint8 NHWC to have the runtime resize and normalize"
            )
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        return np.ascontiguousarray(images)
    if images.dtype == np.uint8:
        if images.shape[3] != channels:
            raise ValueError(f"uint8 images must be NHWC with {channels} channels, got shape {images.shape}")
        if min(images.shape[1:3]) < 1:
            raise ValueError(f"uint8 images have an empty side: {images.shape}")
        if pre.crop is not None:
            images = center_crop(images, pre.crop)
        x = images.astype(np.float32) / 255
        if images.shape[1:3] != (pre.resolution, pre.resolution):
            x = resize_bilinear(x, pre.resolution)
        mean, std = _statistics(pre)
        x = (x - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    raise ValueError(f"images must be float32 (normalized NCHW) or uint8 (NHWC), got dtype {images.dtype}")
