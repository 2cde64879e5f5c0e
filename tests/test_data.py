"""Datasets: the deterministic digits canvas, normalization, and clear errors for bad requests."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

from trainer import data as data_module
from trainer.data import DataInfo, digits_canvas, load_split, raw_images


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in (images, labels):
        h.update(str(array.dtype).encode() + str(array.shape).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def test_digits_test_split_shape_and_dtype():
    images, labels = digits_canvas("test")
    assert images.dtype == np.uint8 and images.shape == (360, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert set(labels.tolist()) == set(range(10))
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])
    assert images.min() == 0 and images.max() > 128, "digits are drawn on the canvas"


def test_digits_train_split_is_three_copies_of_the_rest():
    images, labels = digits_canvas("train")
    assert images.shape == (3 * (1797 - 360), 32, 32, 3) and images.dtype == np.uint8
    third = len(labels) // 3
    assert np.array_equal(labels[:third], labels[third : 2 * third])
    assert not np.array_equal(images[:third], images[third : 2 * third]), "each copy is drawn afresh"


def test_digits_canvas_is_deterministic_within_a_process():
    cached = digest(*digits_canvas("test"))
    recomputed = digest(*data_module._digits_canvas.__wrapped__("test"))  # bypass the cache: draw it again
    assert cached == recomputed


def test_callers_cannot_corrupt_the_cached_split():
    images, _ = raw_images("digits", "test")
    before = digest(*digits_canvas("test"))
    saved = images.copy()
    try:
        images[:1] = 0
    except ValueError:
        pass  # read-only arrays are a fine fix
    try:
        assert digest(*digits_canvas("test")) == before
    finally:
        if images.flags.writeable:
            images[...] = saved  # undo the damage for the rest of the session


def test_digits_canvas_is_identical_in_a_fresh_process():
    script = (
        "import hashlib, numpy as np\n"
        "from trainer.data import digits_canvas\n"
        "images, labels = digits_canvas('test')\n"
        "h = hashlib.sha256()\n"
        "for a in (images, labels):\n"
        "    h.update(str(a.dtype).encode() + str(a.shape).encode())\n"
        "    h.update(np.ascontiguousarray(a).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == digest(*digits_canvas("test"))


def test_digits_canvas_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="'validation'"):
        digits_canvas("validation")


def test_load_split_normalizes_with_the_data_info():
    dataset, info = load_split("digits", "test")
    assert isinstance(info, DataInfo)
    assert info.dataset == "digits" and info.resolution == 32
    assert info.classes == tuple(str(d) for d in range(10))
    assert len(info.mean) == len(info.std) == 3 and all(s > 0 for s in info.std)

    images, labels = digits_canvas("test")
    assert len(dataset) == 360
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.stack([dataset[i][1] for i in range(len(dataset))])
    assert x.dtype == torch.float32 and x.shape == (360, 3, 32, 32)
    assert torch.equal(y, torch.from_numpy(labels))

    scaled = images.astype(np.float64).transpose(0, 3, 1, 2) / 255
    mean = np.asarray(info.mean).reshape(1, 3, 1, 1)
    std = np.asarray(info.std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(x.numpy(), (scaled - mean) / std, atol=1e-5)


def test_digits_normalization_comes_from_the_train_split():
    _, info = load_split("digits", "train")
    train, _ = digits_canvas("train")
    scaled = train.astype(np.float64) / 255
    assert info.mean == (pytest.approx(scaled.mean(), abs=1e-4),) * 3
    assert info.std == (pytest.approx(scaled.std(), abs=1e-4),) * 3


def test_data_info_round_trips_through_a_dict():
    _, info = load_split("digits", "test")
    assert DataInfo.from_dict(info.to_dict()) == info


def test_subset_is_a_fixed_sample():
    a, _ = load_split("digits", "train", subset=64)
    b, _ = load_split("digits", "train", subset=64)
    assert len(a) == 64
    assert a.indices == b.indices
    assert len(set(a.indices)) == 64


def test_raw_images_are_the_canvas_before_preprocessing():
    images, labels = raw_images("digits", "test", limit=10)
    full_images, full_labels = digits_canvas("test")
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, full_images[:10]) and np.array_equal(labels, full_labels[:10])


@pytest.mark.parametrize("call", [load_split, raw_images])
def test_unknown_dataset_is_named(call):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        call("mnist", "test")


def test_cifar10_without_a_data_root_is_refused():
    with pytest.raises(ValueError, match="cifar10.*data-root"):
        load_split("cifar10", "test")
    with pytest.raises(ValueError, match="data root"):
        raw_images("cifar10", "test")


@pytest.mark.parametrize("call", [load_split, raw_images])
def test_missing_cifar10_directory_is_named(call, tmp_path):
    missing = tmp_path / "no-such-cifar"
    with pytest.raises(FileNotFoundError) as error:
        call("cifar10", "test", data_root=missing)
    assert str(missing) in str(error.value)


def test_cifar10_root_without_the_split_is_named(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        load_split("cifar10", "test", data_root=tmp_path)
    assert str(tmp_path / "test") in str(error.value)


def _candidates(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of the zero-padded image, flipped or not: what one augmentation draw may give."""
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    side = image.shape[-1]
    crops = [padded[:, t : t + side, l : l + side] for t in range(2 * padding + 1) for l in range(2 * padding + 1)]
    return crops + [crop.flip(-1) for crop in crops]


def test_random_crop_and_flip_draws_a_padded_crop_per_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognizable
    augmented = data_module.random_crop_and_flip(images, 2)
    assert augmented.shape == images.shape and augmented.dtype == torch.uint8
    flipped = shifted = 0
    for original, result in zip(images, augmented):
        matches = [i for i, c in enumerate(_candidates(original, 2)) if torch.equal(c, result)]
        assert matches, "each output is one crop of its own padded image, maybe flipped"
        flipped += matches[0] >= 25
        shifted += matches[0] % 25 != 12  # 12: the centred crop
    assert 16 < flipped < 48, "about half the images are flipped"
    assert shifted > 48, "offsets are drawn per image"


def test_augmentation_follows_the_global_seed():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(5)
    first = data_module.random_crop_and_flip(images, 4)
    torch.manual_seed(5)
    assert torch.equal(first, data_module.random_crop_and_flip(images, 4))


def test_image_tensors_normalize_as_torchvision():
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    info = DataInfo("cifar10", tuple("abcdefghij"), data_module.CIFAR10_MEAN, data_module.CIFAR10_STD, 32)
    dataset = data_module.ImageTensors(images, np.arange(5), info)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    for index in range(5):
        x, y = dataset[index]
        assert torch.equal(x, reference(Image.fromarray(images[index]))) and int(y) == index
    batch = dataset.__getitems__([4, 1])
    assert torch.equal(batch[0][0], dataset[4][0]) and int(batch[1][1]) == 1


def test_training_batches_are_augmented_and_evaluation_batches_are_not():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (32, 8, 8, 3), dtype=np.uint8)
    info = DataInfo("cifar10", tuple("abcdefghij"), (0.5,) * 3, (0.25,) * 3, 8)
    plain = data_module.ImageTensors(images, np.zeros(32), info)
    augmented = data_module.ImageTensors(images, np.zeros(32), info, augment=True)
    indices = list(range(32))
    plain_batch = torch.stack([x for x, _ in plain.__getitems__(indices)])
    augmented_batch = torch.stack([x for x, _ in augmented.__getitems__(indices)])
    assert torch.equal(plain_batch, torch.stack([x for x, _ in plain.__getitems__(indices)]))
    assert not torch.equal(plain_batch, augmented_batch)
