"""The runtime's numpy preprocessing reproduces the trainer's torch preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.format.manifest import Preprocessing
from runtime.preprocess import center_crop, prepare, resize_bilinear


def torch_resize(nhwc: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return y.permute(0, 2, 3, 1).numpy()


def random_images(n: int, height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, height, width, channels), dtype=np.float32)


@pytest.mark.parametrize("source, size", [(64, 32), (17, 32), (48, 32), (32, 32), (32, 16), (5, 7), (1, 4), (33, 1)])
def test_resize_matches_torch(source, size):
    images = random_images(2, source, source, seed=source)
    out = resize_bilinear(images, size)
    assert out.shape == (2, size, size, 3)
    np.testing.assert_allclose(out, torch_resize(images, size), rtol=0, atol=1e-5)


def test_resize_to_the_same_size_is_the_identity():
    images = random_images(3, 32, 32)
    np.testing.assert_allclose(resize_bilinear(images, 32), images, rtol=0, atol=1e-6)


def test_resize_non_square_input():
    images = random_images(1, 40, 24)
    np.testing.assert_allclose(resize_bilinear(images, 32), torch_resize(images, 32), rtol=0, atol=1e-5)


def test_resize_is_not_a_nearest_neighbour_pick():
    images = random_images(1, 48, 48)
    out = resize_bilinear(images, 32)
    nearest = torch.from_numpy(images).permute(0, 3, 1, 2)
    nearest = F.interpolate(nearest, size=(32, 32), mode="nearest").permute(0, 2, 3, 1).numpy()
    assert np.abs(out - nearest).max() > 1e-2


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 96),
    width=st.integers(1, 96),
    size=st.integers(1, 64),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_resize_matches_torch_for_random_sizes(height, width, size, channels, seed):
    images = random_images(2, height, width, channels, seed=seed)
    np.testing.assert_allclose(resize_bilinear(images, size), torch_resize(images, size), rtol=0, atol=1e-5)


PRE = Preprocessing(resolution=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def torch_reference(uint8: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """What the trainer does: scale to [0, 1], resize with torch, normalize; NCHW float32."""
    x = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255
    if x.shape[-2:] != (pre.resolution, pre.resolution):
        x = F.interpolate(x, size=(pre.resolution,) * 2, mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.std).view(1, -1, 1, 1)
    return ((x - mean) / std).numpy()


@pytest.mark.parametrize("side", [32, 48, 20, 97])
def test_prepare_uint8_matches_the_torch_pipeline(side):
    images = np.random.default_rng(side).integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    out = prepare(images, PRE)
    assert out.dtype == np.float32 and out.shape == (3, 3, 32, 32)
    assert out.flags.c_contiguous
    np.testing.assert_allclose(out, torch_reference(images, PRE), rtol=0, atol=1e-5)


def test_prepare_uses_per_channel_statistics():
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 255, 128, 0
    out = prepare(images, PRE)
    for c, value in enumerate((255, 128, 0)):
        expected = (value / 255 - PRE.mean[c]) / PRE.std[c]
        np.testing.assert_allclose(out[0, c], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("height, width, side, top, left", [(256, 341, 224, 16, 58), (300, 200, 175, 62, 12), (7, 5, 4, 1, 0)])
def test_center_crop_keeps_the_central_square(height, width, side, top, left):
    images = np.arange(height * width * 3, dtype=np.int64).reshape(1, height, width, 3)
    cropped = center_crop(images, 0.875)
    assert cropped.shape == (1, side, side, 3)
    assert np.array_equal(cropped, images[:, top : top + side, left : left + side])


def test_a_crop_is_torchvisions_imagenet_evaluation_up_to_the_resize():
    """Resize(256) + CenterCrop(224) on the 256-pixel short side is exactly the 0.875 crop."""
    from torchvision.transforms import functional as TF

    images = (np.random.default_rng(0).random((1, 256, 320, 3)) * 255).astype(np.uint8)
    pre = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop=0.875)
    expected = TF.normalize(TF.center_crop(torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255, [224, 224]),
                            pre.mean, pre.std)
    np.testing.assert_allclose(prepare(images, pre)[0], expected.numpy(), rtol=0, atol=1e-5)
    uncropped = prepare(images, Preprocessing(224, pre.mean, pre.std))
    assert np.abs(uncropped[0] - expected.numpy()).max() > 1, "without crop the image is squeezed, not cropped"


def test_prepare_passes_normalized_float_through():
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(prepare(x, PRE), x)
    view = np.asfortranarray(x)
    out = prepare(view, PRE)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)


def test_uint8_at_another_size_gives_the_logits_of_the_torch_pipeline(onnx_session, digits_test):
    images, _, _ = digits_test
    big = torch.from_numpy(images[:24]).permute(0, 3, 1, 2).float()
    big = F.interpolate(big, size=(48, 48), mode="bilinear", align_corners=False).round().clamp(0, 255)
    big = big.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    assert big.shape == (24, 48, 48, 3)

    pre = onnx_session.manifest.preprocessing
    reference = onnx_session.run(torch_reference(big, pre))
    result = onnx_session.run(big)
    assert result.paths == reference.paths
    np.testing.assert_allclose(result.logits, reference.logits, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(result.macs, reference.macs)


def test_uint8_at_the_base_size_gives_the_logits_of_the_trainer_tensors(onnx_session, digits_test):
    images, _, normalized = digits_test
    from_uint8 = onnx_session.run(images[:64])
    from_tensors = onnx_session.run(normalized[:64].numpy())
    assert from_uint8.paths == from_tensors.paths
    np.testing.assert_allclose(from_uint8.logits, from_tensors.logits, rtol=0, atol=1e-4)


def test_the_manifest_preprocessing_is_the_trainers(onnx_session, trained):
    _, config = trained
    pre = onnx_session.manifest.preprocessing
    assert pre.resolution == config["data"]["resolution"]
    assert pre.mean == tuple(config["data"]["mean"]) and pre.std == tuple(config["data"]["std"])
    assert pre.resize == "bilinear"
