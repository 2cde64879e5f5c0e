"""Real CIFAR-10 (ImageFolder JPEGs next to the repository): data loading, then train -> export -> run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torchvision import datasets
from helpers import CIFAR10_ROOT
from PIL import Image

import exporter
import runtime
from runtime.format.manifest import Preprocessing
from runtime.preprocess import prepare
from trainer.data import CIFAR10_MEAN, CIFAR10_STD, load_split, raw_images
from trainer.recipes import get_recipe
from trainer.train import train

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

pytestmark = pytest.mark.skipif(
    not (CIFAR10_ROOT / "test").is_dir() or not (CIFAR10_ROOT / "train").is_dir(),
    reason=f"real CIFAR-10 not found at {CIFAR10_ROOT} (expected {{train,test}}/<class>/*.jpg)",
)


def test_test_split_has_10000_images_in_10_alphabetical_classes():
    dataset, info = load_split("cifar10", "test", data_root=CIFAR10_ROOT)
    assert len(dataset) == 10_000
    assert info.classes == CLASSES == tuple(sorted(info.classes))
    assert info.mean == CIFAR10_MEAN and info.std == CIFAR10_STD and info.resolution == 32
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= label < 10


def test_raw_images_are_uint8_nhwc():
    images, labels = raw_images("cifar10", "test", data_root=CIFAR10_ROOT, limit=16)
    assert images.dtype == np.uint8 and images.shape == (16, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.shape == (16,)
    assert ((0 <= labels) & (labels < 10)).all()
    assert images.std() > 10, "real photographs, not a blank canvas"
    again, again_labels = raw_images("cifar10", "test", data_root=CIFAR10_ROOT, limit=16)
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)


def test_runtime_preprocessing_of_jpegs_equals_the_trainer_tensors():
    """A JPEG's pixels through runtime.preprocess equal the trainer's tensor for it."""
    dataset, info = load_split("cifar10", "test", data_root=CIFAR10_ROOT)
    pre = Preprocessing(info.resolution, info.mean, info.std)
    indices = [0, 1234, 5678, 9999]
    files = datasets.ImageFolder(str(CIFAR10_ROOT / "test")).samples  # the trainer decodes them in this order
    pixels = np.stack([np.asarray(Image.open(files[i][0]).convert("RGB")) for i in indices])
    expected = torch.stack([dataset[i][0] for i in indices]).numpy()
    np.testing.assert_allclose(prepare(pixels, pre), expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def cifar_bundle(tmp_path_factory):
    """DRNet on ResNet-8, 1+1 epochs on 256 CIFAR-10 images, exported to ONNX."""
    recipe = get_recipe("drnet-cifar10")
    phases = {name: dataclasses.replace(phase, epochs=1) for name, phase in recipe.phases.items()}
    recipe = dataclasses.replace(recipe, depth=8, phases=phases)
    root = tmp_path_factory.mktemp("cifar")
    config = train(recipe, root / "ckpt", data_root=CIFAR10_ROOT, subset=256)
    report = exporter.export(root / "ckpt", "onnx", root / "bundle")
    return root / "ckpt", root / "bundle", config, report


def test_training_on_real_images_records_its_data(cifar_bundle):
    _, _, config, report = cifar_bundle
    assert config["data"]["dataset"] == "cifar10" and tuple(config["data"]["classes"]) == CLASSES
    assert config["data_root"] == str(CIFAR10_ROOT)
    assert config["training"]["train_images"] == 256
    assert config["model"]["depth"] == 8
    assert config["metrics"]["images"] == 10_000
    assert report.parity is not None and report.parity.path_mismatches == 0


def test_runtime_on_real_jpegs_matches_eager(cifar_bundle):
    checkpoint, bundle, _, _ = cifar_bundle
    from trainer.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    images, _ = raw_images("cifar10", "test", data_root=CIFAR10_ROOT, limit=16)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    eager = model.infer(x)

    session = runtime.load(bundle)
    assert session.classes == CLASSES
    result = session.run(images)
    assert result.paths == eager.paths
    assert np.abs(result.logits - eager.logits.numpy()).max() <= 1e-4
    np.testing.assert_array_equal(result.macs, eager.macs.numpy())
