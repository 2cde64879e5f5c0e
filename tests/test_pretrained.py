"""Plain backbones: stored as safetensors with a sha256 record, refused when damaged, loaded into every BN set."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import CIFAR10_ROOT, REPO_ROOT, slow_except
from torch.utils.data import DataLoader

from trainer.backbone import backbone_from_config, cifar_resnet
from trainer.data import load_split
from trainer.families import FAMILIES, get_family
from trainer.pretrained import (
    BackboneRecord, check_architecture, initialize_backbone, load_backbone, record_path, save_backbone, top1_accuracy,
)
from trainer.recipes import RECIPES, get_recipe
from trainer.train import train

WEIGHTS = REPO_ROOT / "benchmarks" / "weights"
ARCHITECTURE = {"depth": 14, "width": 16, "shortcut": "zero-pad", "num_classes": 10}


def trained_looking(architecture: dict, seed: int = 0) -> torch.nn.Module:
    """A backbone whose BN statistics and weights all differ from a fresh one's, so copies are visible."""
    torch.manual_seed(seed)
    backbone = backbone_from_config(architecture)
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    return backbone


def saved(tmp_path, architecture=ARCHITECTURE, name="resnet-digits-14"):
    backbone = trained_looking(architecture)
    record = BackboneRecord(
        recipe=name, architecture=architecture, data={"dataset": "digits"}, test_accuracy=0.5, test_images=10,
        command="python -m trainer ...", training={},
    )
    path = tmp_path / f"{name}.safetensors"
    save_backbone(path, backbone, record)
    return path, backbone


def test_weights_round_trip_with_their_sha256(tmp_path):
    path, backbone = saved(tmp_path)
    state, record = load_backbone(path)
    assert record.sha256 == json.loads(record_path(path).read_text())["sha256"] and len(record.sha256) == 64
    assert state.keys() == backbone.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())


def test_damaged_weights_are_refused_naming_the_file(tmp_path):
    path, _ = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path.name}: sha256 .* differs"):
        load_backbone(path)


def test_a_missing_record_is_named(tmp_path):
    path, _ = saved(tmp_path)
    record_path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"resnet-digits-14\.json: missing"):
        load_backbone(path)


def test_every_bn_set_starts_from_the_plain_bn(tmp_path):
    path, plain = saved(tmp_path)
    state, _ = load_backbone(path)
    switchable = cifar_resnet(14, num_classes=10, bn_sets=3, shortcut="zero-pad")
    initialize_backbone(switchable, state, path)
    loaded = switchable.state_dict()
    for name, value in plain.state_dict().items():
        if name.startswith("blocks.0.bn1."):
            field = name.rsplit(".", 1)[1]
            for index in range(3):
                assert torch.equal(loaded[f"blocks.0.bn1.sets.{index}.{field}"], value)
    assert torch.equal(loaded["blocks.0.conv1.weight"], state["blocks.0.conv1.weight"])


def test_a_backbone_of_another_depth_is_refused_with_the_names(tmp_path):
    path, _ = saved(tmp_path)
    state, record = load_backbone(path)
    deeper = cifar_resnet(20, num_classes=10, shortcut="zero-pad")
    with pytest.raises(ValueError, match=r"do not fit this backbone; missing blocks\.6\.") as error:
        initialize_backbone(deeper, state, path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="'depth': 14.*recipe builds.*'depth': 20"):
        check_architecture(record, {**ARCHITECTURE, "depth": 20}, path)


def test_init_skips_the_plain_pretraining_and_starts_from_the_weights(tmp_path):
    """URNet from a pretrained ResNet: its pretraining phase is skipped, and its kept ResNet is the loaded one."""
    path, plain = saved(tmp_path)
    recipe = get_recipe("urnet-digits")
    recipe = recipe.without(get_family("urnet").init_skips).with_epochs(2)
    assert recipe.phases["pretrain"].epochs == 0
    config = train(recipe, tmp_path / "run", subset=64, test_subset=32, init=path)
    init = config["training"]["init"]
    assert init["sha256"] == load_backbone(path)[1].sha256 and init["skipped_phases"] == ["pretrain"]
    resnet = torch.load(tmp_path / "run" / "extra-resnet.pt", weights_only=True)
    assert all(torch.equal(resnet[k], v) for k, v in plain.state_dict().items()), "the kept ResNet is the init"


def test_init_refuses_a_backbone_that_does_not_match_the_recipe(tmp_path):
    path, _ = saved(tmp_path, architecture={**ARCHITECTURE, "shortcut": "projection"})
    recipe = dataclasses.replace(get_recipe("blockdrop-digits")).with_epochs(3)
    with pytest.raises(ValueError, match="'shortcut': 'projection'.*recipe builds.*'shortcut': 'zero-pad'"):
        train(recipe, tmp_path / "run", subset=64, init=path)


COMMITTED = sorted(WEIGHTS.glob("*.safetensors"))


def test_weights_are_committed():
    assert {p.stem for p in COMMITTED} >= {"resnet-cifar10-20"}


@pytest.mark.parametrize("weights", COMMITTED, ids=lambda p: p.stem)
def test_committed_weights_load_by_sha256_into_every_family(weights):
    state, record = load_backbone(weights)
    assert weights.stat().st_size < 4 * 2**20, "committed weights stay under 4 MB"
    assert record.recipe == weights.stem and record.test_images == 10_000
    assert record.command.startswith(f"python -m trainer --recipe {record.recipe} ")
    for family in FAMILIES.values():
        options = next(r.options for r in RECIPES.values() if r.family == family.name and r.dataset == "cifar10")
        model = family.build({**record.architecture, "options": dataclasses.asdict(options)})
        initialize_backbone(model.backbone, state, weights)


@pytest.mark.skipif(not CIFAR10_ROOT.is_dir(), reason=f"real CIFAR-10 not found at {CIFAR10_ROOT}")
@pytest.mark.parametrize("weights", slow_except(COMMITTED, WEIGHTS / "resnet-cifar10-20.safetensors"),
                         ids=lambda p: p.stem)
def test_committed_weights_score_their_recorded_accuracy(weights):
    state, record = load_backbone(weights)
    backbone = backbone_from_config(record.architecture)
    initialize_backbone(backbone, state, weights)
    test_set, _ = load_split("cifar10", "test", data_root=CIFAR10_ROOT)
    accuracy = top1_accuracy(backbone, DataLoader(test_set, batch_size=500), torch.device("cpu"))
    assert accuracy == pytest.approx(record.test_accuracy, abs=2e-4)
