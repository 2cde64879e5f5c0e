"""benchmarks/resolution.py's rig: the predictor sends an equal share of the timed images to each candidate."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.resolution import rig_equal_shares
from trainer.families import drnet


def small_drnet(resolutions: tuple[int, ...]) -> drnet.DRNet:
    torch.manual_seed(0)
    options = drnet.DRNetOptions(resolutions=resolutions)
    return drnet.build({"depth": 8, "width": 8, "num_classes": 10, "options": dataclasses.asdict(options)}).eval()


@pytest.mark.parametrize("resolutions", [(32, 24), (32, 24, 16)])
def test_rig_sends_an_equal_share_to_each_candidate(resolutions):
    model = small_drnet(resolutions)
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = model.predictor_logits(x).argmax(dim=1).bincount(minlength=len(resolutions))
    rig_equal_shares(model, x)
    with torch.no_grad():
        logits = model.predictor_logits(x)
    choice = logits.argmax(dim=1)
    assert choice.bincount(minlength=len(resolutions)).tolist() == [12 // len(resolutions)] * len(resolutions)
    assert before.tolist() != [12 // len(resolutions)] * len(resolutions)  # the rig, not chance, split them
    top2 = logits.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) >= 3.9  # no image near a tie: float noise cannot move it


def test_rig_refuses_images_that_do_not_split_equally():
    with pytest.raises(ValueError, match="do not split equally over 3 candidates"):
        rig_equal_shares(small_drnet((32, 24, 16)), torch.randn(10, 3, 32, 32))
