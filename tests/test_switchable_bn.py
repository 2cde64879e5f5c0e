"""Switchable BatchNorm: one statistics set per operating point, switched as a whole."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.backbone import cifar_resnet
from trainer.switchable_bn import SwitchableBatchNorm2d, freeze_bn_set, use_bn_set

SETS = 3


def switchables(model: nn.Module) -> list[SwitchableBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, SwitchableBatchNorm2d)]


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return cifar_resnet(8, num_classes=10, bn_sets=SETS)


def distinct_sets(model: nn.Module) -> None:
    """Give every BN set its own affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in switchables(model):
            for bn in layer.sets:
                n = bn.num_features
                bn.weight.copy_(1 + 0.5 * torch.randn(n, generator=generator))
                bn.bias.copy_(0.5 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def test_every_bn_is_switchable_with_the_requested_sets(model):
    layers = switchables(model)
    assert layers, "bn_sets > 1 must build SwitchableBatchNorm2d layers"
    assert all(len(layer.sets) == SETS and layer.active == 0 for layer in layers)
    plain = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    assert len(plain) == SETS * len(layers), "the only plain BNs are the sets inside switchable layers"


def test_num_sets_must_be_positive():
    with pytest.raises(ValueError, match="num_sets"):
        SwitchableBatchNorm2d(4, num_sets=0)


def test_switching_sets_changes_the_output_in_train_mode(model):
    distinct_sets(model)
    model.train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with use_bn_set(model, 0):
        out0 = model(x)
    with use_bn_set(model, 1):
        out1 = model(x)
    with use_bn_set(model, 0):
        again0 = model(x)
    assert not torch.allclose(out0, out1, atol=1e-4), "set 1's affine parameters were not used"
    torch.testing.assert_close(out0, again0, rtol=0, atol=0)


def test_switching_sets_changes_the_output_in_eval_mode(model):
    distinct_sets(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    outputs = []
    for index in range(SETS):
        with use_bn_set(model, index):
            outputs.append(model(x))
    for i in range(SETS):
        for j in range(i + 1, SETS):
            assert not torch.allclose(outputs[i], outputs[j], atol=1e-4), (i, j)


def test_each_set_keeps_its_own_running_statistics(model):
    model.train()
    layers = switchables(model)
    before = [[(bn.running_mean.clone(), bn.running_var.clone()) for bn in layer.sets] for layer in layers]
    x = 3 + 2 * torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with use_bn_set(model, 0):
        model(x)
    for layer, stats in zip(layers, before):
        trained = layer.sets[0]
        assert not torch.equal(trained.running_mean, stats[0][0]), "set 0 saw a batch and must have moved"
        assert int(trained.num_batches_tracked) == 1
        for bn, (mean, var) in list(zip(layer.sets, stats))[1:]:
            torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=0)
            torch.testing.assert_close(bn.running_var, var, rtol=0, atol=0)
            assert int(bn.num_batches_tracked) == 0


def test_use_bn_set_activates_the_set_and_restores_the_previous_one(model):
    layers = switchables(model)
    with use_bn_set(model, 2):
        assert all(layer.active == 2 for layer in layers)
        with use_bn_set(model, 1):
            assert all(layer.active == 1 for layer in layers)
        assert all(layer.active == 2 for layer in layers), "nested use restores the outer set"
    assert all(layer.active == 0 for layer in layers)


def test_use_bn_set_restores_the_previous_set_on_exception(model):
    layers = switchables(model)
    with use_bn_set(model, 1):
        with pytest.raises(RuntimeError, match="boom"):
            with use_bn_set(model, 2):
                assert all(layer.active == 2 for layer in layers)
                raise RuntimeError("boom")
        assert all(layer.active == 1 for layer in layers)
    assert all(layer.active == 0 for layer in layers)


@pytest.mark.parametrize("index", [SETS, SETS + 5, -1])
def test_use_bn_set_rejects_a_bad_index(model, index):
    layers = switchables(model)
    with pytest.raises(IndexError, match=f"BN set {index} does not exist"):
        with use_bn_set(model, index):
            pytest.fail("the body must not run with a bad index")
    assert all(layer.active == 0 for layer in layers), "a refused switch changes nothing"


@pytest.mark.parametrize("index", range(SETS))
def test_freeze_bn_set_gives_plain_bn_equal_to_the_set(model, index):
    distinct_sets(model)
    model.eval()
    frozen = freeze_bn_set(model, index).eval()

    assert not switchables(frozen)
    originals = switchables(model)
    plain = [m for m in frozen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(type(m) is nn.BatchNorm2d for m in plain)
    assert len(plain) == len(originals)
    for bn, layer in zip(plain, originals):
        expected = layer.sets[index]
        for name in ("weight", "bias", "running_mean", "running_var"):
            torch.testing.assert_close(getattr(bn, name), getattr(expected, name), rtol=0, atol=0)

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        with use_bn_set(model, index):
            expected_out = model(x)
        torch.testing.assert_close(frozen(x), expected_out, rtol=0, atol=0)


def test_freeze_bn_set_leaves_the_original_untouched(model):
    distinct_sets(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers_before = switchables(model)
    frozen = freeze_bn_set(model, 1)

    assert switchables(model) == layers_before, "the original keeps its switchable layers"
    assert all(layer.active == 0 for layer in layers_before)
    with torch.no_grad():  # the copy shares no storage with the original
        for p in frozen.parameters():
            p.add_(1.0)
        for b in frozen.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)


def test_freeze_bn_set_rejects_a_negative_index(model):
    with pytest.raises(IndexError):
        freeze_bn_set(model, -1)


def test_freeze_bn_set_rejects_an_index_past_the_end(model):
    with pytest.raises(IndexError):
        freeze_bn_set(model, SETS)
