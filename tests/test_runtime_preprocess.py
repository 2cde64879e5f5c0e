"""The runtime's preprocessing reproduces the training evaluation transform.

"pil-bilinear" (version 7) against torchvision's transforms on PIL images,
within one level in 255 on a few values (box corners reach Pillow as float32);
"bilinear", the definition before version 7, against its own torch arithmetic,
as it always did; and both normalize as torchvision's ToTensor and Normalize.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmarks.preprocessing import training_preprocessed
from runtime.format.fields import BundleError
from runtime.format.manifest import RESIZES, Preprocessing, read_manifest
from runtime.preprocess import _RESIZES, center_crop, pil_geometry, prepare, resize_bilinear


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


PRE = Preprocessing(resolution=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), resize="bilinear")
IMAGENET = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop=0.875)


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
    pre = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", crop=0.875)
    expected = TF.normalize(TF.center_crop(torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255, [224, 224]),
                            pre.mean, pre.std)
    np.testing.assert_allclose(prepare(images, pre)[0], expected.numpy(), rtol=0, atol=1e-5)
    uncropped = prepare(images, Preprocessing(224, pre.mean, pre.std, "bilinear"))
    assert np.abs(uncropped[0] - expected.numpy()).max() > 1, "without crop the image is squeezed, not cropped"


def test_prepare_passes_normalized_float_through():
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(prepare(x, PRE), x)
    view = np.asfortranarray(x)
    out = prepare(view, PRE)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)


def test_uint8_at_another_size_gives_the_logits_of_the_torchvision_pipeline(onnx_session, digits_test):
    images, _, _ = digits_test
    big = np.stack([np.asarray(Image.fromarray(image).resize((48, 40), Image.Resampling.BICUBIC)) for image in images[:24]])
    pre = onnx_session.manifest.preprocessing
    assert pre.resize == "pil-bilinear" and big.shape == (24, 40, 48, 3)

    reference = onnx_session.run(training_preprocessed(big, pre))
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
    assert pre.resize == "pil-bilinear"


# "pil-bilinear": torchvision's evaluation transform on PIL images.

def assert_within_a_level(actual: np.ndarray, expected: np.ndarray, pre: Preprocessing, *, share: float = 1.0) -> None:
    """Equal but for values one level in 255 apart (in normalized units: 1 / 255 / std), on at most `share` of them."""
    difference = np.abs(actual - expected)
    assert difference.max() <= 1 / 255 / min(pre.std) + 1e-6, f"largest difference {difference.max()}"
    assert (difference > 1e-6).mean() <= share, f"{(difference > 1e-6).mean():.2%} of values differ"


def photo_frame() -> np.ndarray:
    """A 1920 x 1080 frame of real content: scikit-learn's china.jpg, enlarged."""
    from sklearn.datasets import load_sample_image

    return np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((1920, 1080), Image.Resampling.BICUBIC))


def test_a_1080p_frame_equals_the_training_evaluation_transform():
    frame = photo_frame()[None]
    out = prepare(frame, IMAGENET)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = training_preprocessed(frame, IMAGENET)
    assert_within_a_level(out, expected, IMAGENET, share=1e-3)
    assert np.abs(out - expected).mean() <= 1e-4
    old = prepare(frame, Preprocessing(224, IMAGENET.mean, IMAGENET.std, "bilinear", crop=0.875))
    assert np.abs(old - expected).mean() > 0.05, "the definition before version 7 does not antialias"


def test_the_geometry_is_torchvisions_resize_then_center_crop():
    assert pil_geometry(1080, 1920, IMAGENET) == ((256, 455), (16, 116))  # 115.5 rounds to even
    assert pil_geometry(640, 427, IMAGENET) == ((383, 256), (80, 16))
    assert pil_geometry(256, 300, IMAGENET) == ((256, 300), (16, 38))
    assert pil_geometry(1080, 1920, PRE) == ((32, 32), (0, 0))


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    resolution=st.sampled_from([8, 16, 24]),
    crop=st.sampled_from([None, 0.875, 0.5, 1.0]),
    count=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_pil_bilinear_equals_torchvision_for_any_size(height, width, resolution, crop, count, seed):
    images = np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    pre = Preprocessing(resolution, IMAGENET.mean, IMAGENET.std, crop=crop)
    out = prepare(images, pre)
    assert out.shape == (count, 3, resolution, resolution)
    assert_within_a_level(out, training_preprocessed(images, pre), pre)  # a few values of a tiny image can be a level off


def test_a_crop_that_needs_no_resize_is_the_crop_exactly():
    images = np.random.default_rng(3).integers(0, 256, (2, 256, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare(images, IMAGENET), training_preprocessed(images, IMAGENET))


def test_an_image_at_the_resolution_is_only_normalized_as_before():
    """The 32 x 32 path: the float32 arithmetic of the definition before version 7, value for value."""
    images = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mean, std = np.float32(PRE.mean), np.float32(PRE.std)
    before = ((images.astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    for resize in RESIZES:
        out = prepare(images, Preprocessing(32, PRE.mean, PRE.std, resize))
        assert out.flags.c_contiguous and out.dtype == np.float32
        np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(before, training_preprocessed(images, Preprocessing(32, PRE.mean, PRE.std)))


def test_every_resize_the_manifest_names_has_a_definition():
    assert set(_RESIZES) == set(RESIZES)
    with pytest.raises(ValueError, match=r"preprocessing.resize 'nearest' is not one of"):
        prepare(np.zeros((1, 8, 8, 3), np.uint8), Preprocessing(4, (0.5,) * 3, (0.5,) * 3, "nearest"))


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, 32, 32, 3), np.float64), r"images must be float32 \(normalized NCHW\) or uint8 \(NHWC\), got dtype float64"),
    (np.zeros((1, 32, 32, 3), np.int32), r"got dtype int32"),
    (np.zeros((1, 1080, 1920, 4), np.uint8), r"uint8 images must be NHWC with 3 channels, got shape \(1, 1080, 1920, 4\)"),
    (np.zeros((1, 3, 1080, 1920), np.uint8), r"uint8 images must be NHWC with 3 channels, got shape \(1, 3, 1080, 1920\)"),
    (np.zeros((1080, 1920, 3), np.uint8), r"images must be a 4-D batch \(float32 NCHW or uint8 NHWC\), got shape \(1080, 1920, 3\)"),
    (np.zeros((0, 1080, 1920, 3), np.uint8), r"images is an empty batch"),
    (np.zeros((1, 0, 1920, 3), np.uint8), r"uint8 images have an empty side"),
    ([[0]], r"images must be a numpy array, got list"),
])
def test_a_bad_frame_is_refused_naming_the_problem(images, message):
    with pytest.raises(ValueError, match=message):
        prepare(images, IMAGENET)


def test_a_version_6_manifest_keeps_its_resize_and_its_arithmetic(tmp_path):
    """Bundles exported before version 7 say "bilinear": crop, then the float resize without antialiasing."""
    from helpers import REPO_ROOT, read_json, write_json

    manifest = read_json(REPO_ROOT / "android_demo" / "golden" / "drnet.manifest.json")
    manifest["format_version"], manifest["preprocessing"]["resize"] = 6, "bilinear"  # as every version 6 exporter wrote
    write_json(tmp_path / "manifest.json", manifest)
    pre = read_manifest(tmp_path).preprocessing
    images = np.random.default_rng(5).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(prepare(images, pre), torch_reference(images, pre), rtol=0, atol=1e-5)

    manifest["preprocessing"]["resize"] = "pil-bilinear"
    write_json(tmp_path / "manifest.json", manifest)
    with pytest.raises(BundleError, match=r"preprocessing.resize: 'pil-bilinear' is not one of \['bilinear'\]"):
        read_manifest(tmp_path)
    manifest["format_version"] = 7
    write_json(tmp_path / "manifest.json", manifest)
    assert read_manifest(tmp_path).preprocessing.resize == "pil-bilinear"


def test_the_android_golden_cases_are_this_runtimes():
    """android_demo/golden/preprocessing.json: "bilinear" recorded from this runtime, "pil-bilinear" from torchvision."""
    import base64

    from helpers import REPO_ROOT, read_json

    cases = read_json(REPO_ROOT / "android_demo" / "golden" / "preprocessing.json")["cases"]
    assert {case["preprocessing"]["resize"] for case in cases} == set(RESIZES)
    for case in cases:
        settings = case["preprocessing"]
        pre = Preprocessing(settings["resolution"], tuple(settings["mean"]), tuple(settings["std"]), settings["resize"],
                            settings.get("crop"))
        images = np.frombuffer(base64.b64decode(case["images"]["base64"]), np.uint8).reshape(case["images"]["shape"])
        recorded = case["preprocessed"]
        expected = np.frombuffer(base64.b64decode(recorded["base64"]), "<f4").reshape(recorded["shape"])
        if pre.resize == "bilinear":
            np.testing.assert_array_equal(prepare(images, pre), expected)
        else:
            assert_within_a_level(prepare(images, pre), expected, pre)
