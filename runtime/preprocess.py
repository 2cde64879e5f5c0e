"""Turn what a caller hands `Session.run` into the float32 NCHW batch the graphs expect.

The manifest's `preprocessing.resize` names the definition (docs/bundle.md):

- "pil-bilinear" (version 7, what the exporter writes): torchvision's
  evaluation transform on PIL images, Resize(round(resolution / crop)) then
  CenterCrop(resolution), or Resize((resolution, resolution)) without a crop.
  Pillow computes it here as it does in training (fixed-point, antialiased
  when shrinking), only over the crop: a 1080p frame is never resized whole.
- "bilinear" (every version, the only one before 7): central crop, then a
  float bilinear resize without antialiasing, kept so that older bundles
  prepare their images as they always did.

Either way a uint8 image at the bundle's size, or one the crop alone brings to
it, is only normalized: one table lookup per value, the same float32
arithmetic as torchvision's ToTensor and Normalize.

>>> pre = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop=0.875)
>>> prepare(np.zeros((1, 1080, 1920, 3), np.uint8), pre).shape
(1, 3, 224, 224)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from runtime.format.manifest import Preprocessing

__all__ = ["prepare", "pil_geometry", "center_crop", "resize_bilinear"]


def pil_geometry(height: int, width: int, pre: Preprocessing) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where "pil-bilinear" resizes an image to, (height, width), and the top-left of the square it keeps.

    With a crop: torchvision's Resize(S) with S = round(resolution / crop) on the
    short side, the long side int(S x long / short), then CenterCrop(resolution)
    at round((side - resolution) / 2), halves to even (Python's round, as
    torchvision). Without: the whole image to resolution x resolution.
    """
    side = pre.resolution
    if pre.crop is None:
        return (side, side), (0, 0)
    short_side = round(side / pre.crop)
    if width <= height:
        resized = (int(short_side * height / width), short_side)
    else:
        resized = (short_side, int(short_side * width / height))
    return resized, (int(round((resized[0] - side) / 2.0)), int(round((resized[1] - side) / 2.0)))


def _pil_resize(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 NHWC images at the bundle's resolution, by Pillow's bilinear resize over the kept square only.

    Pillow's `box` maps the output onto the source, so only the crop is
    computed; the source is first cut to the box and the filter's reach around
    it (clipped to the image, as Pillow clips), so that Pillow copies in no
    more of a large frame than it reads. Box corners travel to Pillow as
    float32: against resizing the whole image and then cropping, a value can
    differ by 1 in 255, on a few pixels in ten thousand (tests/test_runtime_preprocess.py).
    """
    count, height, width, _ = images.shape
    side = pre.resolution
    (resized_h, resized_w), (top, left) = pil_geometry(height, width, pre)
    if (resized_h, resized_w) == (height, width):  # the resize is the identity: the crop alone
        return images[:, top : top + side, left : left + side]
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("resizing images needs Pillow, part of the runtime's install: pip install pillow") from error

    scale_y, scale_x = height / resized_h, width / resized_w
    box = (left * scale_x, top * scale_y, (left + side) * scale_x, (top + side) * scale_y)
    reach_x, reach_y = max(scale_x, 1.0) + 1, max(scale_y, 1.0) + 1  # the bilinear filter's support, and a pixel
    x0, y0 = max(0, math.floor(box[0] - reach_x)), max(0, math.floor(box[1] - reach_y))
    x1, y1 = min(width, math.ceil(box[2] + reach_x)), min(height, math.ceil(box[3] + reach_y))
    window = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    out = np.empty((count, side, side, images.shape[3]), np.uint8)
    for i in range(count):
        source = Image.fromarray(np.ascontiguousarray(images[i, y0:y1, x0:x1]))
        out[i] = np.asarray(source.resize((side, side), Image.Resampling.BILINEAR, box=window))
    return out


def center_crop(images: np.ndarray, fraction: float) -> np.ndarray:
    """"bilinear": the central square of side round(fraction x the short side) of uint8 NHWC images (at least 1 pixel).

    Offsets round down: (height - side) // 2 from the top, likewise from the left.
    """
    height, width = images.shape[1:3]
    side = max(1, int(fraction * min(height, width) + 0.5))
    top, left = (height - side) // 2, (width - side) // 2
    return images[:, top : top + side, left : left + side]


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """"bilinear": resize float NHWC images to size x size.

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


@lru_cache(maxsize=8)
def _table(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Every normalized value, channel c's 256 from c x 256; and c x 256 at each (c, y, x) of an image.

    Each entry is (float32(v) / 255 - mean[c]) / std[c] in float32, so a lookup
    equals the arithmetic done value by value. The offsets are whole images,
    not (c, 1, 1), because a contiguous add is several times a broadcast one.
    """
    mean, std = _statistics(pre)
    table = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255) - mean[:, None]) / std[:, None]
    offsets = np.repeat(np.arange(len(mean), dtype=np.intp) * 256, pre.resolution**2)
    return np.ascontiguousarray(table).reshape(-1), offsets.reshape(len(mean), pre.resolution, pre.resolution)


def _normalize(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 NHWC at the bundle's resolution to normalized float32 NCHW, by table lookup."""
    table, offsets = _table(pre)
    indices = images.transpose(0, 3, 1, 2).astype(np.intp, order="C")
    indices += offsets
    return table.take(indices)


def _prepare_pil_bilinear(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    return _normalize(_pil_resize(images, pre), pre)


def _prepare_bilinear(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The definition before version 7: crop, scale to [0, 1], resize in float, normalize."""
    if pre.crop is not None:
        images = center_crop(images, pre.crop)
    side = pre.resolution
    if images.shape[1:3] == (side, side):
        return _normalize(images, pre)
    mean, std = _statistics(pre)
    x = (resize_bilinear(images.astype(np.float32) / 255, side) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


# One per name in runtime.format.manifest.RESIZES: uint8 NHWC of any size to the graphs' batch.
_RESIZES = {"bilinear": _prepare_bilinear, "pil-bilinear": _prepare_pil_bilinear}


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
    if images.dtype == np.uint8:
        if images.shape[3] != channels:
            raise ValueError(f"uint8 images must be NHWC with {channels} channels, got shape {images.shape}")
        if min(images.shape[1:3]) < 1:
            raise ValueError(f"uint8 images have an empty side: {images.shape}")
        resize = _RESIZES.get(pre.resize)
        if resize is None:
            raise ValueError(f"preprocessing.resize {pre.resize!r} is not one of {list(_RESIZES)}")
        if pre.crop is None and images.shape[1:3] == (pre.resolution, pre.resolution):
            return _normalize(images, pre)  # what every definition does to an uncropped image at the size
        return resize(images, pre)
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
    raise ValueError(f"images must be float32 (normalized NCHW) or uint8 (NHWC), got dtype {images.dtype}")
