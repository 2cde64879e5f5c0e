"""ImageNet as an ImageFolder tree: torchvision's standard transforms, and a torchvision-backbone recipe trained on it.

The tree is generated: two classes of JPEGs at varied sizes and aspect ratios.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from trainer.data import IMAGENET_MEAN, IMAGENET_STD, load_split
from trainer.recipes import get_recipe
from trainer.train import train, training_loader

SIZES = [(300, 260), (256, 400), (500, 333), (240, 240)]  # width, height: landscape, portrait, square


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("n01440764", "n01443537"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index, (width, height) in enumerate(SIZES):
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{index}.JPEG", quality=95)
    return root


def test_evaluation_resizes_the_short_side_to_256_and_takes_the_central_224(imagenet_tree):
    data, info = load_split("imagenet", "test", data_root=imagenet_tree)
    assert info.dataset == "imagenet" and info.resolution == 224
    assert info.classes == ("n01440764", "n01443537")
    assert (info.mean, info.std) == (IMAGENET_MEAN, IMAGENET_STD)
    image, label = data[2]  # 500 x 333: the short side is the height
    path = imagenet_tree / "val" / "n01440764" / "n01440764_2.JPEG"
    with Image.open(path) as source:
        resized = source.convert("RGB").resize((round(500 * 256 / 333), 256), Image.BILINEAR)
    top, left = (256 - 224) // 2, (resized.width - 224 + 1) // 2
    central = np.asarray(resized, dtype=np.float32)[top : top + 224, left : left + 224] / 255
    expected = (torch.from_numpy(central).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert image.shape == (3, 224, 224) and label == 0
    # PIL's bilinear resize antialiases on downscaling, as torchvision's Resize does on PIL images.
    torch.testing.assert_close(image, expected, atol=2e-2, rtol=0)


def test_training_draws_a_random_resized_crop_and_flip_per_image(imagenet_tree):
    data, _ = load_split("imagenet", "train", data_root=imagenet_tree, augment=True)
    assert isinstance(data.transform.transforms[0], transforms.RandomResizedCrop)
    torch.manual_seed(0)
    first = data[0][0]
    second = data[0][0]
    assert first.shape == second.shape == (3, 224, 224)
    assert not torch.equal(first, second), "each fetch draws a new crop"


def test_the_loader_decodes_in_worker_processes(imagenet_tree):
    loader, _ = training_loader("imagenet", 4, data_root=imagenet_tree, workers=2)
    assert loader.num_workers == 2
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 224, 224) and labels.shape == (4,)


def test_a_missing_split_names_the_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="val"):
        load_split("imagenet", "test", data_root=tmp_path)


def test_a_torchvision_recipe_trains_and_evaluates_on_the_tree(imagenet_tree, tmp_path):
    """DRNet on MobileNetV2 at [224, 168, 112], in batches of 4 instead of the recipe's 256."""
    recipe = dataclasses.replace(get_recipe("drnet-imagenet-mobilenetv2").with_epochs(2), batch_size=4)
    config = train(recipe, tmp_path, data_root=imagenet_tree, workers=0)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"]["dataset"] == "imagenet" and saved["data"]["resolution"] == 224
    assert saved["model"]["num_classes"] == 2
    assert config["metrics"]["images"] == 8
