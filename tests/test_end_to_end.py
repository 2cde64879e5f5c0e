"""The public commands in sequence: python -m trainer, python -m exporter, runtime.load(...).run(...)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, read_json

import runtime
from trainer.__main__ import main as trainer_main
from trainer.checkpoint import load_checkpoint
from trainer.data import load_split, raw_images


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_train_export_run(tmp_path):
    checkpoint, bundle = tmp_path / "ckpt", tmp_path / "bundle"

    trained = run("-m", "trainer", "--recipe", "drnet-digits", "--epochs", "2", "--out", str(checkpoint),
                  "--subset", "256", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    assert "top-1" in trained.stdout and "MMACs" in trained.stdout
    for row in ("model", "random resolution, equal MACs", "static res32", "static res24", "static res16"):
        assert row in trained.stdout, row

    config = read_json(checkpoint / "config.json")
    metrics = config["metrics"]
    assert metrics["images"] == 360
    assert {"accuracy", "mean_macs", "histogram"} <= metrics["model"].keys()
    assert sum(metrics["model"]["histogram"].values()) == 360
    assert {"random resolution, equal MACs", "static res32", "static res24", "static res16"} <= metrics["baselines"].keys()
    assert config["training"]["train_images"] == 256
    assert config["training"]["phases"]["pretrain"]["epochs"] + config["training"]["phases"]["finetune"]["epochs"] == 2
    assert f"{metrics['model']['accuracy']:.2%}" in trained.stdout

    exported = run("-m", "exporter", "--checkpoint", str(checkpoint), "--target", "onnx", "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    assert f"wrote {bundle}: drnet for onnx on host-cpu (--device), fp32 (--precision), 4 graphs" in exported.stdout
    # 64 images, the first SINGLE_IMAGES (4) checked again one at a time
    assert "parity: 68 samples" in exported.stdout and "68/68 same path" in exported.stdout

    images, labels = raw_images("digits", "test")
    result = runtime.load(bundle).run(images)
    runtime_correct = int((result.logits.argmax(1) == labels).sum())

    model, _ = load_checkpoint(checkpoint)
    dataset, _ = load_split("digits", "test")
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    eager = model.infer(x)
    eager_correct = int((eager.logits.argmax(1).numpy() == labels).sum())

    assert result.paths == eager.paths
    assert runtime_correct == eager_correct
    assert runtime_correct == round(metrics["model"]["accuracy"] * 360)
    assert {p: result.paths.count(p) for p in ("res32", "res24", "res16")} == metrics["model"]["histogram"]
    assert float(result.macs.mean()) == pytest.approx(metrics["model"]["mean_macs"], rel=1e-6)
    np.testing.assert_array_equal(result.macs, eager.macs.numpy())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipe", "nosuch-recipe"], "unknown recipe 'nosuch-recipe'"),
        (["--recipe", "drnet-digits", "--epochs", "1"], "--epochs must be at least 2"),
        (["--recipe", "drnet-cifar10"], "--data-root"),
        ([], "--recipe is required"),
    ],
)
def test_trainer_cli_refuses_bad_requests(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exit:
        trainer_main([*args, "--out", str(out), "--device", "cpu"])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_trainer_lists_its_recipes(capsys):
    assert trainer_main(["--list-recipes"]) == 0
    listed = capsys.readouterr().out
    assert "drnet-digits" in listed and "drnet-cifar10" in listed
