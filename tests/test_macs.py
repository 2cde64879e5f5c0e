"""MACs in the papers' convention: conv and linear multiply-accumulates only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from trainer.backbone import cifar_resnet
from trainer.macs import count_macs


def test_cifar_resnet110_is_253_mmacs():
    model = cifar_resnet(110, num_classes=10).eval()
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == pytest.approx(253e6, rel=0.01)


def test_resnet50_at_224_is_4_1_gmacs():
    model = torchvision.models.resnet50().eval()
    assert count_macs(model, torch.zeros(1, 3, 224, 224)) == pytest.approx(4.1e9, rel=0.01)


def test_linear_is_exactly_in_times_out():
    assert count_macs(nn.Linear(10, 20), torch.zeros(1, 10)) == 200


def test_macs_scale_with_the_batch():
    assert count_macs(nn.Linear(10, 20), torch.zeros(3, 10)) == 600


@pytest.mark.parametrize(
    "cin, cout, kernel, stride, padding, side",
    [(3, 16, 3, 1, 1, 32), (16, 32, 3, 2, 1, 32), (8, 4, 1, 1, 0, 17), (5, 7, 5, 2, 0, 21)],
)
def test_conv_is_cout_cin_k_k_hout_wout(cin, cout, kernel, stride, padding, side):
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    out_side = (side + 2 * padding - kernel) // stride + 1
    assert conv(torch.zeros(1, cin, side, side)).shape[-1] == out_side
    expected = cout * cin * kernel * kernel * out_side * out_side
    assert count_macs(conv, torch.zeros(1, cin, side, side)) == expected


def test_bn_relu_pool_and_resize_are_free():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.zeros(1, 3, 16, 16)
    extras = nn.Sequential(
        conv, nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)
    ).eval()
    assert count_macs(extras, x) == count_macs(conv, x) == 8 * 3 * 9 * 16 * 16
    for free in (nn.BatchNorm2d(3).eval(), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)):
        assert count_macs(free, x) == 0, type(free).__name__
    assert count_macs(lambda t: F.interpolate(t, size=(24, 24), mode="bilinear", align_corners=False), x) == 0


def test_counting_does_not_track_gradients():
    layer = nn.Linear(4, 2)
    x = torch.zeros(1, 4, requires_grad=True)
    seen = []
    count_macs(lambda t: seen.append(layer(t)), x)
    assert not seen[0].requires_grad
