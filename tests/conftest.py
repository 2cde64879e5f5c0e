"""Shared, session-scoped artifacts: tiny trained DRNet, BlockDrop and URNet models and their bundles.

Training and exporting dominate the suite's run time, so every test reuses
these. They are read-only: a test that corrupts a bundle or checkpoint copies
it into its own tmp_path first (helpers.copy_tree).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DIGITS_RECIPE = "drnet-digits"
TRAIN_EPOCHS = 2
TRAIN_SUBSET = 512


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """The output directory of a 2-epoch DRNet run on 512 digits images (a few seconds)."""
    from trainer.recipes import get_recipe
    from trainer.train import train

    out = tmp_path_factory.mktemp("checkpoint") / "drnet-digits"
    train(get_recipe(DIGITS_RECIPE).with_epochs(TRAIN_EPOCHS), out, subset=TRAIN_SUBSET)
    return out


@pytest.fixture(scope="session")
def trained(checkpoint_dir):
    """(model, config) loaded from the session checkpoint; do not modify the model."""
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint_dir)


@pytest.fixture
def fresh_model(checkpoint_dir):
    """A private copy of the trained model, for tests that patch or modify it."""
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint_dir)[0]


@pytest.fixture(scope="session")
def onnx_bundle(checkpoint_dir, tmp_path_factory) -> Path:
    import exporter

    out = tmp_path_factory.mktemp("bundles") / "drnet-onnx"
    exporter.export(checkpoint_dir, "onnx", out)
    return out


@pytest.fixture(scope="session")
def et_bundle(checkpoint_dir, tmp_path_factory) -> Path:
    import exporter

    out = tmp_path_factory.mktemp("bundles") / "drnet-et"
    exporter.export(checkpoint_dir, "executorch", out)
    return out


@pytest.fixture(scope="session")
def digits_test():
    """The digits test split: (uint8 NHWC images, labels, normalized float32 NCHW tensor)."""
    from trainer.data import digits_canvas, load_split

    images, labels = digits_canvas("test")
    dataset, _ = load_split("digits", "test")
    normalized = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images.copy(), labels.copy(), normalized


@pytest.fixture(scope="session")
def eager(trained, digits_test):
    """model.infer on the normalized digits test images: the reference every bundle must match."""
    model, _ = trained
    _, _, normalized = digits_test
    return model.infer(normalized)


@pytest.fixture(scope="session")
def onnx_session(onnx_bundle):
    import runtime

    return runtime.load(onnx_bundle)


@pytest.fixture(scope="session")
def block_checkpoints(tmp_path_factory):
    """Tiny trained BlockDrop and URNet digits checkpoints (3 epochs on 192 images)."""
    from trainer.recipes import get_recipe
    from trainer.train import train

    out = {}
    for family in ("blockdrop", "urnet"):
        directory = tmp_path_factory.mktemp("block-checkpoints") / family
        train(get_recipe(f"{family}-digits").with_epochs(3), directory, subset=192)
        out[family] = directory
    return out


@pytest.fixture(scope="session")
def calibration(digits_test):
    """The first 256 digits training images, normalized: the block families' export plan is made on them."""
    from trainer.data import load_split

    dataset, _ = load_split("digits", "train")
    return torch.stack([dataset[i][0] for i in range(256)])


@pytest.fixture(scope="session")
def block_bundles(block_checkpoints, calibration, tmp_path_factory):
    """BlockDrop and URNet bundles for ONNX and ExecuTorch; BlockDrop's plan caches its 4 most frequent paths."""
    import exporter

    bundles = {}
    for family, checkpoint in block_checkpoints.items():
        for target in ("onnx", "executorch"):
            out = tmp_path_factory.mktemp("block-bundles") / f"{family}-{target}"
            options = {"cache_paths": 4} if family == "blockdrop" else {}
            exporter.export(checkpoint, target, out, calibration=calibration, **options)
            bundles[family, target] = out
    return bundles
